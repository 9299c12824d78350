#!/usr/bin/env bash
# make bench-artifact: artifact figures (see artifact/benches/artifact.rs) and the time from
# `kubectl apply` of the Fashion-MNIST example to Published on the local test ground: the Job
# runs the release optimizer image (`make images`) on one of the test ground's nodes. Writes
# bench-results/artifact.json and prints it as the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source hack/lib.sh
cargo build --release -q -p edgefleet-optimizer
cargo build -q --bin edgefleet-operator
optimizer=$root/target/release/edgefleet-optimizer
ORT_DYLIB_PATH=$(hack/ort-lib.sh)
export ORT_DYLIB_PATH
data=$(hack/datasets.sh)/fashion-mnist-test.npz
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-bench-artifact.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Every passing candidate per device class, kept on disk, for the bytes-over-the-air table.
runs=()
for class in cpu-int8 nvidia-fp16; do
  log "optimize --device-class $class --keep-candidates"
  "$optimizer" optimize --model optimizer/fixtures/fashion-cnn/model.onnx --dataset "$data" \
    --device-class "$class" --max-drop 0.01 --latency-runs 20 --keep-candidates \
    --out "$work/$class" >"$work/$class.log" 2>&1 || { cat "$work/$class.log" >&2; exit 1; }
  runs+=("$work/$class")
done

# 2. kubectl apply -> Published, with inputs no earlier run published (a unique time budget).
eval "$(bash hack/up.sh)"
ns=bench-artifact-$$
kubectl create namespace "$ns" >/dev/null
pids=()
trap 'cleanup; kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true' EXIT
kubectl apply --server-side -f crds/ >/dev/null
kubectl apply -f examples/deviceclasses.yaml >/dev/null
"$optimizer" upload --model optimizer/fixtures/fashion-cnn/model.onnx "$EDGEFLEET_REGISTRY/edgefleet/base/fashion-cnn:v1" --plain-http "$EDGEFLEET_REGISTRY" >/dev/null
"$optimizer" upload --dataset "$data" "$EDGEFLEET_REGISTRY/edgefleet/datasets/fashion-mnist-test:v1" --plain-http "$EDGEFLEET_REGISTRY" >/dev/null
optimizer_image=$(bash hack/images.sh release "$EDGEFLEET_REGISTRY" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"]["optimizer"]["reference"])')
target/debug/edgefleet-operator --namespace "$ns" --lease-namespace "$ns" --http-addr 127.0.0.1:0 \
  --optimizer-image "$optimizer_image" >"$work/operator.log" 2>&1 &
pids+=($!)
budget=$((1200 + RANDOM % 600))s
sed -e "s/localhost:5000/$EDGEFLEET_REGISTRY/g" -e "s/timeBudget: .*/timeBudget: $budget/" examples/fashion-mnist.yaml >"$work/example.yaml"
started=$(date +%s.%N)
kubectl apply -n "$ns" -f "$work/example.yaml" >/dev/null
log "applied the example (timeBudget $budget); waiting for Published"
kubectl wait -n "$ns" edgemodel/fashion-mnist --for condition=Published --timeout=1200s >/dev/null
apply_s=$(python3 -c "import time; print(round(time.time() - $started, 1))")
log "kubectl apply -> Published: ${apply_s}s"

# 3. Transport figures against a private registry, then everything as one JSON document.
BENCH_RUNS=$(IFS=,; echo "${runs[*]}") BENCH_APPLY_TO_PUBLISHED_S=$apply_s \
  cargo bench -q -p edgefleet-artifact --bench artifact 2>/dev/null | tail -1
