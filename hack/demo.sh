#!/usr/bin/env bash
# `make demo`: what edgefleet does today, end to end on the local test ground. Everything shown is
# real: a kube-apiserver built from source, the operator binary, CEL admission, the injection
# webhook called by the API server, Events, sidecars pulling from the registry.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ns=edgefleet-demo

step "1. local control plane (kube-apiserver $K8S_VERSION, etcd $ETCD_VERSION, registry)"
eval "$(bash hack/up.sh)"
echo "KUBECONFIG=$KUBECONFIG  EDGEFLEET_REGISTRY=$EDGEFLEET_REGISTRY"
kubectl version 2>/dev/null | grep -i server

step "2. build the operator, the optimizer, the sidecar and the test-only node emulator; install the CRDs"
cargo build -q --bin edgefleet-operator --bin edgefleet-optimizer --bin edgefleet-sidecar --bin node-emulator
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=60s crd/edgemodels.edgefleet.dev crd/deviceclasses.edgefleet.dev >/dev/null
kubectl get crd -l '!none' -o name | grep edgefleet

step "3. publish the base model and the dataset the example names (ModelPack artifacts)"
data=$(bash hack/datasets.sh)/fashion-mnist-test.npz
./target/debug/edgefleet-optimizer upload --model optimizer/fixtures/fashion-cnn/model.onnx \
  "$EDGEFLEET_REGISTRY/edgefleet/base/fashion-cnn:v1" --plain-http "$EDGEFLEET_REGISTRY"
./target/debug/edgefleet-optimizer upload --dataset "$data" \
  "$EDGEFLEET_REGISTRY/edgefleet/datasets/fashion-mnist-test:v1" --plain-http "$EDGEFLEET_REGISTRY"
# The example names localhost:5000; the test ground's registry listens on a free port.
example=$(mktemp -t fashion-mnist.XXXXXX.yaml)
# Pauses of 5 s instead of 30 s between the waves keep the demo short.
sed -e "s/localhost:5000/$EDGEFLEET_REGISTRY/g" -e 's/pause: 30s/pause: 5s/' examples/fashion-mnist.yaml >"$example"

step "4. start the operator (leader election on a Lease in $ns, the sidecar-injection webhook) and an emulated node"
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl delete -f examples/deviceclasses.yaml --ignore-not-found >/dev/null
kubectl create namespace "$ns" >/dev/null
log_file=$(mktemp -t edgefleet-operator.XXXXXX.log)
node_log=$(mktemp -t edgefleet-node.XXXXXX.log)
webhook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Outside a cluster the API server calls the webhook by URL; in a cluster, through its Service.
./target/debug/edgefleet-operator --lease-namespace "$ns" --http-addr 127.0.0.1:0 \
  --webhook-addr "127.0.0.1:$webhook_port" --webhook-url "https://127.0.0.1:$webhook_port/mutate" \
  --webhook-names 127.0.0.1 --webhook-configuration edgefleet-demo-injector \
  --sidecar-image ghcr.io/edgefleet/sidecar:demo --sidecar-plain-http "$EDGEFLEET_REGISTRY" >"$log_file" 2>&1 &
operator=$!
# No kubelet here: the node emulator (tests/testenv, never shipped) runs the Job's pod and each
# pod's injected sidecar as local processes (mounted Secrets, downward API, the ServiceAccount
# token) and writes their status.
./target/debug/node-emulator --namespace "$ns" --binary edgefleet-optimizer=target/debug/edgefleet-optimizer \
  --binary edgefleet-sidecar=target/debug/edgefleet-sidecar >"$node_log" 2>&1 &
node=$!
trap 'kill $operator 2>/dev/null || true; kill -INT $node 2>/dev/null || true; kubectl delete mutatingwebhookconfiguration edgefleet-demo-injector --ignore-not-found >/dev/null 2>&1 || true' EXIT
echo "operator pid $operator (log $log_file), node emulator pid $node (log $node_log)"
until kubectl get mutatingwebhookconfiguration edgefleet-demo-injector >/dev/null 2>&1; do sleep 0.5; done
kubectl get mutatingwebhookconfiguration edgefleet-demo-injector -o jsonpath='webhook {.webhooks[0].name}: pods labelled {.webhooks[0].objectSelector.matchExpressions[0].key}, failurePolicy {.webhooks[0].failurePolicy}, caBundle from the operator'"'"'s own CA{"\n"}'

step "5. a small fleet: five camera pods opt in with the label edgefleet.dev/model=fashion-mnist; the webhook injects the sidecar"
kubectl apply -n "$ns" -f examples/sidecar-rbac.yaml >/dev/null
for i in 0 1 2 3 4; do
  canary=false; [[ $i == 0 ]] && canary=true
  cat <<MANIFEST
---
apiVersion: v1
kind: Pod
metadata:
  name: camera-$i
  labels: {edgefleet.dev/model: fashion-mnist, edgefleet.dev/canary: "$canary"}
spec:
  containers: [{name: camera-app, image: example.invalid/camera-app:1}]
MANIFEST
done | kubectl apply -n "$ns" -f -
kubectl get -n "$ns" pod camera-0 -o jsonpath='camera-0 now has: init container {.spec.initContainers[0].name} (restartPolicy {.spec.initContainers[0].restartPolicy}), args {.spec.initContainers[0].args}, serviceAccount {.spec.serviceAccountName}{"\n"}'
until [[ $(kubectl get -n "$ns" pods -o jsonpath='{.items[*].status.phase}') == "Running Running Running Running Running" ]]; do sleep 0.5; done
kubectl get -n "$ns" pods -o jsonpath='{range .items[*]}  {.metadata.name}  {.status.phase}  sidecar on {.metadata.annotations.edgefleet\.dev/emulated-address}{"\n"}{end}'

step "6. apply the Fashion-MNIST EdgeModel before its DeviceClass exists"
kubectl apply -n "$ns" -f "$example"
kubectl wait -n "$ns" edgemodel/fashion-mnist --for jsonpath='{.status.phase}'=Stalled --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
until (( $(kubectl get -n "$ns" modelassignments --no-headers 2>/dev/null | wc -l) == 5 )); do sleep 0.5; done
kubectl get -n "$ns" modelassignments   # one per serving pod, made by the operator; nothing to serve yet

step "7. apply the DeviceClasses: the EdgeModel recovers on its own, a Job optimizes it, the fleet gets it"
kubectl apply -f examples/deviceclasses.yaml
kubectl get deviceclasses.edgefleet.dev   # plain `deviceclasses` is the DRA kind of resource.k8s.io; `dc` works too
until [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.phase}') =~ ^(Optimizing|Ready)$ ]]; do sleep 1; done
kubectl get -n "$ns" jobs -o wide  # none when an earlier run already published these exact inputs
echo "waiting for the Job (every cpu-int8 technique behind the accuracy gate: a few minutes on 2 cores)..."
started=$(date +%s)
until [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.phase}') =~ ^(Ready|Stalled)$ ]]; do
  sleep 10
  printf '  %4ss  %s\n' "$(( $(date +%s) - started ))" "$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].message}')"
done
until [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.rollout.state}') == Complete ]]; do sleep 1; done
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" modelassignments   # revision 1 went to every pod at once: they served nothing yet
kubectl get -n "$ns" jobs
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].artifact}' | python3 -m json.tool
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "8. what the registry holds (read back by digest)"
ref=$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].artifact.reference}')
./target/debug/edgefleet-optimizer inspect "$ref" --plain-http "$EDGEFLEET_REGISTRY"

step "9. a second artifact (int8 dynamic) rolls out in waves: the canary, then 50%, then all, each pod reporting health"
kubectl patch -n "$ns" edgemodel fashion-mnist --type merge -p '{"spec":{"optimization":{"techniques":["int8Dynamic"]}}}'
started=$(date +%s)
last=""
while :; do
  line=$(kubectl get -n "$ns" edgemodel fashion-mnist --no-headers -o custom-columns=REV:.status.revision,ROLLOUT:.status.rollout.state,STEP:.status.rollout.step,UPDATED:.status.rollout.updated,READY:.status.rollout.ready,WAITING:.status.rollout.waitingFor)
  if [[ $line != "$last" ]]; then printf '  %4ss  %s\n' "$(( $(date +%s) - started ))" "$line"; last=$line; fi
  [[ $line =~ ^2[[:space:]]+Complete ]] && break
  sleep 1
done
kubectl get -n "$ns" modelassignments
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist --sort-by=.lastTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | grep -E "REASON|Rollout"

step "10. Fashion-MNIST test images sent to camera-2's sidecar: predictions next to the true labels"
address=$(kubectl get -n "$ns" pod camera-2 -o jsonpath='{.metadata.annotations.edgefleet\.dev/emulated-address}')
"$(bash hack/python-env.sh)" - "$data" "$address" <<'PY'
import json, sys, urllib.request
import numpy as np
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
d = np.load(sys.argv[1]); x, y = d["x"], d["y"]
right = 0
for i in range(12):
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, *x[i].shape], "data": x[i].ravel().tolist()}]}).encode()
    r = json.load(urllib.request.urlopen(urllib.request.Request(f"http://{sys.argv[2]}/v2/models/fashion-mnist/infer", body, {"Content-Type": "application/json"})))
    scores = r["outputs"][0]["data"]; guess = max(range(10), key=lambda k: scores[k])
    right += guess == y[i]
    print(f"  image {i:2d}  predicted {names[guess]:12s} true {names[y[i]]:12s} {'ok' if guess == y[i] else 'MISS'}")
print(f"  {right}/12 right; served by revision digest {r['model_version'][:19]}...")
PY
echo "what the sidecars' ServiceAccount may do (least privilege):"
kubectl auth can-i --list -n "$ns" --as "system:serviceaccount:$ns:edgefleet-sidecar" 2>/dev/null | grep -E "^(Resources|modelassignments|secrets)" | sed 's/^/  /' || true

step "11. the same inputs under another name: reused, no new Job"
sed 's/name: fashion-mnist$/name: fashion-mnist-copy/' "$example" | kubectl apply -n "$ns" -f -
kubectl wait -n "$ns" edgemodel/fashion-mnist-copy --for condition=Published --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" jobs
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist-copy,reason=Reused -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "12. a malformed manifest is refused at admission, naming the field"
for bad in steps-decreasing source-url-no-sha floor-above-one; do
  kubectl apply -n "$ns" -f "tests/manifests/invalid/$bad.yaml" 2>&1 | sed 's/^/  /' || true
done

step "13. delete the EdgeModels: the finalizer deletes their Jobs, then the objects are gone"
kubectl delete -n "$ns" edgemodel fashion-mnist fashion-mnist-copy --wait=true
kubectl get -n "$ns" jobs 2>&1 | sed 's/^/  /' 
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist,reason=Deleted -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "14. stop the operator with SIGTERM: it drains and releases its lease"
kill -TERM "$operator"
wait "$operator" || true
kill -INT "$node" 2>/dev/null || true
kubectl delete mutatingwebhookconfiguration edgefleet-demo-injector --ignore-not-found >/dev/null
trap - EXIT
grep -E "shutdown signal|lease released|stopped" "$log_file" | sed 's/^/  /'
kubectl get lease -n "$ns" edgefleet-operator -o jsonpath='lease holder now: "{.spec.holderIdentity}"{"\n"}'

step "done. The environment keeps running for you: eval \"\$(make -s up)\"; stop it with make down"
