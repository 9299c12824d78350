#!/usr/bin/env bash
# `make demo`: what edgefleet does today, end to end on the local test ground. Everything shown is
# real: a kube-apiserver built from source, the operator binary, CEL admission, Events.
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
sed "s/localhost:5000/$EDGEFLEET_REGISTRY/g" examples/fashion-mnist.yaml >"$example"

step "4. start the operator (leader election on a Lease in $ns) and an emulated node"
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl delete -f examples/deviceclasses.yaml --ignore-not-found >/dev/null
kubectl create namespace "$ns" >/dev/null
log_file=$(mktemp -t edgefleet-operator.XXXXXX.log)
node_log=$(mktemp -t edgefleet-node.XXXXXX.log)
./target/debug/edgefleet-operator --lease-namespace "$ns" --http-addr 127.0.0.1:0 >"$log_file" 2>&1 &
operator=$!
# No kubelet here: the node emulator (tests/testenv, never shipped) runs the Job's pod as a
# local process with its command, args and mounted Secret, and writes its status.
./target/debug/node-emulator --namespace "$ns" --binary edgefleet-optimizer=target/debug/edgefleet-optimizer >"$node_log" 2>&1 &
node=$!
trap 'kill $operator 2>/dev/null || true; kill -INT $node 2>/dev/null || true' EXIT
echo "operator pid $operator (log $log_file), node emulator pid $node (log $node_log)"

step "5. apply the Fashion-MNIST EdgeModel before its DeviceClass exists"
kubectl apply -n "$ns" -f "$example"
kubectl wait -n "$ns" edgemodel/fashion-mnist --for jsonpath='{.status.phase}'=Stalled --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'

step "6. apply the DeviceClasses: the EdgeModel recovers on its own and an optimization Job starts"
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
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" jobs
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].artifact}' | python3 -m json.tool
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "7. what the registry holds (read back by digest)"
ref=$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].artifact.reference}')
./target/debug/edgefleet-optimizer inspect "$ref" --plain-http "$EDGEFLEET_REGISTRY"

step "8. serve it over the air: a pod's ModelAssignment names the digest; the sidecar (its own ServiceAccount) pulls, verifies, self-tests, serves and reports"
kubectl apply -n "$ns" -f examples/sidecar-rbac.yaml
kubectl apply -n "$ns" -f - <<MANIFEST
apiVersion: edgefleet.dev/v1alpha1
kind: ModelAssignment
metadata: {name: app-0}
spec:
  model: fashion-mnist
  deviceClass: cpu-int8
  pod: {name: app-0, uid: demo-0000}
  desired: {repository: "${ref%@*}", digest: "${ref#*@}", revision: 1}
MANIFEST
sa_kubeconfig=$(mktemp -t edgefleet-sidecar-kubeconfig.XXXXXX)
sak() { KUBECONFIG=$sa_kubeconfig kubectl config "$@" >/dev/null; }
sak set-cluster local --server "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')" \
  --certificate-authority "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
sak set-credentials edgefleet-sidecar --token "$(kubectl create token edgefleet-sidecar -n "$ns" --duration 1h)"
sak set-context local --cluster local --user edgefleet-sidecar --namespace "$ns"
sak use-context local
sidecar_log=$(mktemp -t edgefleet-sidecar.XXXXXX.log)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KUBECONFIG=$sa_kubeconfig ./target/debug/edgefleet-sidecar serve --assignment app-0 --namespace "$ns" \
  --name fashion-mnist --listen "127.0.0.1:$port" --heartbeat 2s \
  --cache "$(mktemp -d -t edgefleet-sidecar-cache.XXXXXX)" --plain-http "$EDGEFLEET_REGISTRY" >"$sidecar_log" 2>&1 &
sidecar=$!
for _ in $(seq 120); do
  [[ $(kubectl get -n "$ns" modelassignment app-0 -o jsonpath='{.status.health}') == Healthy ]] && break
  sleep 0.5
done
kubectl get -n "$ns" modelassignments
kubectl get -n "$ns" modelassignment app-0 -o jsonpath='{.status}' | python3 -m json.tool
body=$(python3 -c 'import json; print(json.dumps({"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,28,28],"data":[0.0]*784}]}))')
curl -fsS "127.0.0.1:$port/v2/models/fashion-mnist/infer" -d "$body" | python3 -c 'import json,sys; r=json.load(sys.stdin); o=r["outputs"][0]; print("infer:", o["shape"], "top-1 class", max(range(10), key=lambda i: o["data"][i]), "served by", r["model_version"][:19])'
echo "what the sidecar's ServiceAccount may do with these resources (least privilege):"
KUBECONFIG=$sa_kubeconfig kubectl auth can-i --list -n "$ns" 2>/dev/null | grep -E "^(Resources|modelassignments|secrets)" | sed 's/^/  /' || true
kill -TERM "$sidecar"; wait "$sidecar" || true

step "9. the same inputs under another name: reused, no new Job"
sed 's/name: fashion-mnist$/name: fashion-mnist-copy/' "$example" | kubectl apply -n "$ns" -f -
kubectl wait -n "$ns" edgemodel/fashion-mnist-copy --for condition=Published --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" jobs
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist-copy,reason=Reused -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "10. a malformed manifest is refused at admission, naming the field"
for bad in steps-decreasing source-url-no-sha floor-above-one; do
  kubectl apply -n "$ns" -f "tests/manifests/invalid/$bad.yaml" 2>&1 | sed 's/^/  /' || true
done

step "11. delete the EdgeModels: the finalizer deletes their Jobs, then the objects are gone"
kubectl delete -n "$ns" edgemodel fashion-mnist fashion-mnist-copy --wait=true
kubectl get -n "$ns" jobs 2>&1 | sed 's/^/  /' 
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist,reason=Deleted -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "12. stop the operator with SIGTERM: it drains and releases its lease"
kill -TERM "$operator"
wait "$operator" || true
kill -INT "$node" 2>/dev/null || true
trap - EXIT
grep -E "shutdown signal|lease released|stopped" "$log_file" | sed 's/^/  /'
kubectl get lease -n "$ns" edgefleet-operator -o jsonpath='lease holder now: "{.spec.holderIdentity}"{"\n"}'

step "done. The environment keeps running for you: eval \"\$(make -s up)\"; stop it with make down"
