#!/usr/bin/env bash
# `make demo`: what edgefleet does, end to end on the local test ground. Everything shown is
# real: a kube-apiserver built from source, four nodes that are real kubelets with containerd
# (each in a network namespace of its own; the last an arm64 node, its kubelet and containers
# arm64 binaries run by qemu-user), the project's own images pulled from the local registry, CEL admission, the injection webhook called by the API server, optimization Jobs
# in pods, sidecars pulling artifacts, a node's link cut and restored.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
ns=edgefleet-demo
started_demo=$(date +%s)

step "1. the local test ground: control plane (kubernetes $K8S_VERSION, etcd $ETCD_VERSION), registry, four real nodes (one arm64)"
say "first run only: kube-apiserver, kubelet & co. are built from their Go modules (about 7 minutes on 2 cores)"
eval "$(bash hack/up.sh)"
echo "KUBECONFIG=$KUBECONFIG  EDGEFLEET_REGISTRY=$EDGEFLEET_REGISTRY"
kubectl get nodes -o wide -L edgefleet.dev/device-class
arm_node=$(kubectl get nodes -l kubernetes.io/arch=arm64 -o jsonpath='{.items[0].metadata.name}')
[[ -n $arm_node ]] || die "no arm64 node: start the test ground with ARM64_NODES=1 (the default)"
say "$arm_node is arm64: its kubelet is the arm64 build under qemu-user, and so are the containers it runs"

step "2. build the operator, the optimizer, the sidecar and the example camera app; their images"
say "first run only: cargo compiles about 450 crates and the tests (10 to 15 minutes on 2 cores)"
# The debug binaries as make test builds them, so neither builds them twice; a line every 50 crates.
bash hack/debug-build.sh 2>&1 |
  awk '/Compiling/ {n++; if (n % 50 == 0) {printf "   %d crates compiled\n", n; fflush()}} /^error/ {print; e=1} END {exit e}'
say "images (no Docker: an OCI index of an amd64 and an arm64 image each, one layer apiece, pushed with crane, pinned by digest)"
say "first run only: the arm64 binaries are cross-built too (hack/cross.sh, a few minutes)"
images=$(bash hack/images.sh debug "$EDGEFLEET_REGISTRY" 2>/dev/null | tail -1)
image() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images"][sys.argv[2]]["reference"])' "$images" "$1"; }
arm64_image() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images"][sys.argv[2]]["platforms"]["arm64"]["reference"])' "$images" "$1"; }
for name in operator optimizer sidecar camera-app; do say "$(image "$name")"; done
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=60s crd/edgemodels.edgefleet.dev crd/deviceclasses.edgefleet.dev >/dev/null
kubectl get crd -o name | grep edgefleet

step "3. publish the base model and the dataset the example names (ModelPack artifacts)"
data=$(bash hack/datasets.sh)/fashion-mnist-test.npz
./target/debug/edgefleet-optimizer upload --model optimizer/fixtures/fashion-cnn/model.onnx \
  "$EDGEFLEET_REGISTRY/edgefleet/base/fashion-cnn:v1" --plain-http "$EDGEFLEET_REGISTRY"
./target/debug/edgefleet-optimizer upload --dataset "$data" \
  "$EDGEFLEET_REGISTRY/edgefleet/datasets/fashion-mnist-test:v1" --plain-http "$EDGEFLEET_REGISTRY"
# The example names localhost:5000; the test ground's registry is in its own network.
example=$(mktemp -t fashion-mnist.XXXXXX.yaml)
# Pauses of 5 s instead of 30 s between the waves, and a 30 s heartbeat timeout (sidecars report
# every 10 s) instead of 90 s, keep the demo short.
# The fleet spans both architectures: cpu-int8 (here its nodes are amd64) and cpu-int8-arm64.
sed -e "s/localhost:5000/$EDGEFLEET_REGISTRY/g" -e 's/pause: 30s/pause: 5s/' \
  -e 's/heartbeatTimeout: 90s/heartbeatTimeout: 30s/' \
  -e 's/deviceClasses: \[cpu-int8\]/deviceClasses: [cpu-int8, cpu-int8-arm64]/' \
  -e 's/^    objective: smallest/    techniques: [int8Static]\n    objective: smallest/' \
  -e '/maxLatencyP99Ms/d' examples/fashion-mnist.yaml >"$example"
# One technique (static int8, whose kernels differ by architecture) keeps the emulated arm64
# gate to minutes: every sample there costs tens of times its native time. For the same reason
# no p99 limit: the emulated arm64 sidecar answers in ~100 ms, and the health gate would (rightly)
# abort its rollout against the example's 50 ms.
grep -q 'cpu-int8-arm64' "$example" || die "examples/fashion-mnist.yaml: deviceClasses is not [cpu-int8] any more"

step "4. start the operator (leader election on a Lease in $ns, the sidecar-injection webhook)"
# What an interrupted earlier run left: its EdgeModels' finalizers need an operator, and none runs.
for m in $(kubectl get -n "$ns" edgemodels -o name 2>/dev/null); do
  kubectl patch -n "$ns" "$m" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
done
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl delete -f examples/deviceclasses.yaml -f examples/deviceclass-arm64.yaml --ignore-not-found >/dev/null
kubectl create namespace "$ns" >/dev/null
keys=$(mktemp -d -t edgefleet-keys.XXXXXX)
./target/debug/edgefleet-optimizer keygen --out "$keys" >/dev/null
kubectl create secret generic edgefleet-signing -n "$ns" --from-file="$keys/cosign.key" --from-file="$keys/cosign.pub" >/dev/null
say "signing key pair made (edgefleet-optimizer keygen) and stored as Secret $ns/edgefleet-signing: Jobs sign with it, the operator and every sidecar verify with cosign.pub"
log_file=$(mktemp -t edgefleet-operator.XXXXXX.log)
webhook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Outside a cluster the API server calls the webhook by URL; in a cluster (the Helm chart, see
# the README's quickstart), through its Service.
./target/debug/edgefleet-operator --lease-namespace "$ns" --http-addr 127.0.0.1:0 \
  --webhook-addr "127.0.0.1:$webhook_port" --webhook-url "https://127.0.0.1:$webhook_port/mutate" \
  --webhook-names 127.0.0.1 --webhook-configuration edgefleet-demo-injector \
  --optimizer-image "$(image optimizer)" --optimizer-platform-image "arm64=$(arm64_image optimizer)" \
  --signing-secret edgefleet-signing --sidecar-image "$(image sidecar)" \
  --sidecar-platform-image "arm64=$(arm64_image sidecar)" --sidecar-plain-http "$EDGEFLEET_REGISTRY" >"$log_file" 2>&1 &
operator=$!
cleanup() {
  kill "$operator" 2>/dev/null || true
  bash hack/nodes.sh heal 2 >/dev/null 2>&1 || true
  kubectl delete mutatingwebhookconfiguration edgefleet-demo-injector --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "operator pid $operator (log $log_file)"
until kubectl get mutatingwebhookconfiguration edgefleet-demo-injector >/dev/null 2>&1; do sleep 0.5; done
kubectl get mutatingwebhookconfiguration edgefleet-demo-injector -o jsonpath='webhook {.webhooks[0].name}: pods labelled {.webhooks[0].objectSelector.matchExpressions[0].key}, failurePolicy {.webhooks[0].failurePolicy}, caBundle from the operator'"'"'s own CA{"\n"}'

step "5. a fleet of five camera pods on the amd64 nodes opts in (labels edgefleet.dev/model=fashion-mnist, edgefleet.dev/device-class=cpu-int8): the webhook injects the sidecar"
kubectl apply -n "$ns" -f examples/sidecar-rbac.yaml >/dev/null
kubectl apply -f examples/deviceclasses.yaml
kubectl get deviceclasses.edgefleet.dev   # plain `deviceclasses` is the DRA kind of resource.k8s.io; `dc` works too
say "the pods name their device class: the model spans two, so each pod says which it serves (and the webhook places it by it)"
sed -e "s|ghcr.io/edgefleet/camera-app:.*|$(image camera-app)|" \
  -e 's|edgefleet.dev/model: fashion-mnist,|edgefleet.dev/model: fashion-mnist, edgefleet.dev/device-class: cpu-int8,|' \
  examples/camera-fleet.yaml | kubectl apply -n "$ns" -f -
until (( $(kubectl get -n "$ns" pods -l app=camera --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l) == 5 )); do sleep 1; done
pod0=$(kubectl get -n "$ns" pods -l edgefleet.dev/canary=true -o jsonpath='{.items[0].metadata.name}')
kubectl get -n "$ns" pod "$pod0" -o jsonpath='each pod now has: init container {.spec.initContainers[0].name} (restartPolicy {.spec.initContainers[0].restartPolicy}, image {.spec.initContainers[0].image}), serviceAccount {.spec.serviceAccountName}{"\n"}'
say "the sidecars run (they pulled their image on their node) but are not ready: nothing is published yet"
kubectl get -n "$ns" pods -o wide

step "6. apply the Fashion-MNIST EdgeModel (classes cpu-int8 and cpu-int8-arm64) before the arm64 DeviceClass exists"
kubectl apply -n "$ns" -f "$example"
kubectl wait -n "$ns" edgemodel/fashion-mnist --for jsonpath='{.status.phase}'=Stalled --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
until (( $(kubectl get -n "$ns" modelassignments --no-headers 2>/dev/null | wc -l) == 5 )); do sleep 0.5; done
kubectl get -n "$ns" modelassignments   # one per serving pod, made by the operator; nothing to serve yet

step "7. apply the arm64 DeviceClass and an arm64 camera pod: the EdgeModel recovers on its own, a Job per class optimizes it on a node of that class, the fleet gets it"
kubectl apply -f examples/deviceclass-arm64.yaml
sed "s|ghcr.io/edgefleet/camera-app:.*|$(arm64_image camera-app)|" examples/camera-fleet-arm64.yaml | kubectl apply -n "$ns" -f -
until [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.phase}') =~ ^(Optimizing|Ready)$ ]]; do sleep 1; done
until (( $(kubectl get -n "$ns" pods -l app=camera-arm64 --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l) == 1 )); do sleep 1; done
arm_pod=$(kubectl get -n "$ns" pods -l app=camera-arm64 -o jsonpath='{.items[0].metadata.name}')
kubectl get -n "$ns" pod "$arm_pod" -o jsonpath='the arm64 pod {.metadata.name} on {.spec.nodeName}: camera app {.spec.containers[0].image}, sidecar {.spec.initContainers[0].image} (the arm64 images, by digest){"\n"}'
kubectl get -n "$ns" jobs,pods -l edgefleet.dev/inputs -o wide  # none when an earlier run already published these exact inputs
say "waiting for the Jobs (static int8 behind the accuracy gate; the arm64 class's Job runs on $arm_node under emulation, on a subset of the evaluation set)..."
started=$(date +%s)
until [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.phase}') =~ ^(Ready|Stalled)$ ]]; do
  sleep 10
  kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.deviceClasses[*]}{.name}: {.message}{"\n"}{end}' |
    sed "s/^/   $(printf '%4ss' "$(( $(date +%s) - started ))")  /"
done
until [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.rollout.state}') =~ ^(Complete|Aborted)$ ]]; do sleep 1; done
kubectl get -n "$ns" edgemodels
if [[ $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.rollout.state}') == Aborted ]]; then
  kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
  die "the first rollout aborted (above)"
fi
kubectl get -n "$ns" pods -o wide   # every sidecar pulled, verified, self-tested and serves: 2/2 ready
kubectl get -n "$ns" modelassignments   # revision 1 went to every pod at once: they served nothing yet
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].artifact}' | python3 -m json.tool
say "one artifact per class, each gated where its devices run:"
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.deviceClasses[*]}{.name}: {.artifact.technique}, top-1 {.artifact.accuracy}, gated on {.artifact.gatedOn}, {.artifact.digest}{"\n"}{end}' | sed 's/^/   /'
kubectl get -n "$ns" modelassignments -o custom-columns=POD:.spec.pod.name,CLASS:.spec.deviceClass,ARCH:.status.arch,SERVING:.status.current.digest,HEALTH:.status.health
say "the canary's camera app, over localhost to its sidecar:"
kubectl logs -n "$ns" "$pod0" -c camera-app | tail -2 | sed 's/^/   /'

step "8. what the registry holds (read back by digest)"
ref=$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.deviceClasses[0].artifact.reference}')
./target/debug/edgefleet-optimizer inspect "$ref" --plain-http "$EDGEFLEET_REGISTRY"
say "its signature (cosign's key-based layout, so \`cosign verify --key cosign.pub\` accepts it too):"
./target/debug/edgefleet-optimizer verify "$ref" --key "$keys/cosign.pub" --plain-http "$EDGEFLEET_REGISTRY" | sed 's/^/   /'

step "9. a second artifact (int8 dynamic): while its Job runs, the fleet stays ready; then it rolls out in waves across the nodes"
# Revisions count per model: each class's new artifact is a revision of its own.
rev1=$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.revision}')
kubectl patch -n "$ns" edgemodel fashion-mnist --type merge -p '{"spec":{"optimization":{"techniques":["int8Dynamic"]}}}'
started=$(date +%s)
last=""
columns=REV:.status.revision,ROLLOUT:.status.rollout.state,STEP:.status.rollout.step,UPDATED:.status.rollout.updated,READY:.status.rollout.ready,OFFLINE:.status.rollout.offline,WAITING:.status.rollout.waitingFor
while :; do
  line=$(kubectl get -n "$ns" edgemodel fashion-mnist --no-headers -o custom-columns="$columns")
  phase=$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.phase}')
  if [[ $line != "$last" ]]; then printf '   %4ss  %-10s %s\n' "$(( $(date +%s) - started ))" "$phase" "$line"; last=$line; fi
  # Done when every class's rollout is of a revision after $rev1 and complete (or aborted).
  states=$(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.rollouts[*]}{.revision}={.state} {end}')
  settled=1 aborted=0
  for s in $states; do
    ((${s%%=*} > rev1)) || settled=0
    case ${s#*=} in Complete) ;; Aborted) aborted=1 ;; *) settled=0 ;; esac
  done
  ((settled)) && break
  if ((aborted)); then
    say "a new revision was rolled back by its health gate (above); its class serves the one before"
    break
  fi
  sleep 1
done
kubectl get -n "$ns" modelassignments -o custom-columns=POD:.spec.pod.name,REVISION:.spec.desired.revision,SERVING:.status.current.revision,HEALTH:.status.health
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist --sort-by=.lastTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | grep -E "REASON|Rollout"

step "10. node edge-2 loses its network: its pods keep serving their apps from the cache; the rollout counts them offline"
away=$(kubectl get -n "$ns" pods -l app=camera --field-selector spec.nodeName=edge-2 -o jsonpath='{.items[*].metadata.name}')
away_ip=$(kubectl get -n "$ns" pod "${away%% *}" -o jsonpath='{.status.podIP}')
say "on edge-2: $away"
bash hack/nodes.sh cut 2
cut_at=$(date +%s)
until (( $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.rollout.offline}') > 0 )); do sleep 1; done
say "counted offline $(( $(date +%s) - cut_at ))s after the cut (heartbeatTimeout 30s):"
kubectl get -n "$ns" edgemodels
stats() {
  nsenter --net=/run/netns/edgefleet-edge-2 curl -sS --max-time 5 "http://$away_ip:9090/stats" |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print("answered %s, failed after its first answer %s, model %s..." % (s["answered"], s["failed_after_first_answer"], s["version"][:19]))'
}
say "its camera app, read from inside the cut-off node: $(stats)"
sleep 5
say "five seconds later:                               $(stats)"
until [[ $(kubectl get node edge-2 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == Unknown ]]; do sleep 2; done
kubectl get nodes
bash hack/nodes.sh heal 2
healed_at=$(date +%s)
until (( $(kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{.status.rollout.offline}') == 0 )); do sleep 1; done
say "link restored: counted back $(( $(date +%s) - healed_at ))s later"
kubectl get -n "$ns" edgemodels
until [[ $(kubectl get node edge-2 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]; do sleep 2; done
kubectl get nodes
kubectl get -n "$ns" pods -o wide

step "11. Fashion-MNIST test images sent to a camera pod's sidecar: predictions next to the true labels"
address=$(kubectl get -n "$ns" pod "$pod0" -o jsonpath='{.status.podIP}'):8500
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
    print(f"   image {i:2d}  predicted {names[guess]:12s} true {names[y[i]]:12s} {'ok' if guess == y[i] else 'MISS'}")
print(f"   {right}/12 right; served by revision digest {r['model_version'][:19]}...")
PY
say "what the sidecars' ServiceAccount may do (least privilege):"
kubectl auth can-i --list -n "$ns" --as "system:serviceaccount:$ns:edgefleet-sidecar" 2>/dev/null | grep -E "^(Resources|modelassignments|secrets)" | sed 's/^/   /' || true

step "12. the same inputs under another name: reused, no new Job"
sed 's/name: fashion-mnist$/name: fashion-mnist-copy/' "$example" | kubectl apply -n "$ns" -f -
kubectl wait -n "$ns" edgemodel/fashion-mnist-copy --for condition=Published --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist-copy,reason=Reused -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "13. a malformed manifest is refused at admission, naming the field"
for bad in steps-decreasing source-url-no-sha floor-above-one heartbeat-timeout-short; do
  kubectl apply -n "$ns" -f "tests/manifests/invalid/$bad.yaml" 2>&1 | sed 's/^/   /' || true
done

step "14. delete the EdgeModels: the finalizer deletes their Jobs, then the objects are gone; the pods keep serving"
kubectl delete -n "$ns" edgemodel fashion-mnist fashion-mnist-copy --wait=true
kubectl get -n "$ns" jobs 2>&1 | sed 's/^/   /'
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist,reason=Deleted -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "15. stop the operator with SIGTERM: it drains and releases its lease"
kill -TERM "$operator"
wait "$operator" || true
kubectl delete mutatingwebhookconfiguration edgefleet-demo-injector --ignore-not-found >/dev/null
trap - EXIT
grep -E "shutdown signal|lease released|stopped" "$log_file" | sed 's/^/   /'
kubectl get lease -n "$ns" edgefleet-operator -o jsonpath='lease holder now: "{.spec.holderIdentity}"{"\n"}'

step "done in $(( $(date +%s) - started_demo ))s. The test ground keeps running: eval \"\$(make -s up)\"; kubectl get pods -n $ns -o wide; stop it with make down"
