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

step "2. build the operator and install the CRDs"
cargo build -q --bin edgefleet-operator
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=60s crd/edgemodels.edgefleet.dev crd/deviceclasses.edgefleet.dev >/dev/null
kubectl get crd -l '!none' -o name | grep edgefleet

step "3. start the operator (leader election on a Lease in $ns)"
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl delete -f examples/deviceclasses.yaml --ignore-not-found >/dev/null
kubectl create namespace "$ns" >/dev/null
log_file=$(mktemp -t edgefleet-operator.XXXXXX.log)
./target/debug/edgefleet-operator --lease-namespace "$ns" --http-addr 127.0.0.1:0 >"$log_file" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT
echo "operator pid $operator, log $log_file"

step "4. apply the Fashion-MNIST EdgeModel before its DeviceClass exists"
kubectl apply -n "$ns" -f examples/fashion-mnist.yaml
kubectl wait -n "$ns" edgemodel/fashion-mnist --for jsonpath='{.status.phase}'=Stalled --timeout=60s >/dev/null
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "5. apply the DeviceClasses: the EdgeModel recovers on its own"
kubectl apply -f examples/deviceclasses.yaml
kubectl wait -n "$ns" edgemodel/fashion-mnist --for condition=Ready --timeout=60s >/dev/null
kubectl get deviceclasses.edgefleet.dev   # plain `deviceclasses` is the DRA kind of resource.k8s.io; `dc` works too
kubectl get -n "$ns" edgemodels
kubectl get -n "$ns" edgemodel fashion-mnist -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'

step "6. a malformed manifest is refused at admission, naming the field"
for bad in steps-decreasing source-url-no-sha floor-above-one; do
  kubectl apply -n "$ns" -f "tests/manifests/invalid/$bad.yaml" 2>&1 | sed 's/^/  /' || true
done

step "7. delete the EdgeModel: the finalizer runs, then the object is gone"
kubectl delete -n "$ns" edgemodel fashion-mnist --wait=true
kubectl get -n "$ns" events --field-selector involvedObject.name=fashion-mnist,reason=Deleted -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "8. stop the operator with SIGTERM: it drains and releases its lease"
kill -TERM "$operator"
wait "$operator" || true
trap - EXIT
grep -E "shutdown signal|lease released|stopped" "$log_file" | sed 's/^/  /'
kubectl get lease -n "$ns" edgefleet-operator -o jsonpath='lease holder now: "{.spec.holderIdentity}"{"\n"}'

step "done. The environment keeps running for you: eval \"\$(make -s up)\"; stop it with make down"
