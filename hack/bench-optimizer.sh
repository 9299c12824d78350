#!/usr/bin/env bash
# make bench-optimizer: the optimizer per technique on the committed Fashion-MNIST CNN, every
# result re-measured with tract and ONNX Runtime at 1 thread, and ONNX Runtime's own Python
# quantizers on the same data as the peer. Writes bench-results/optimizer.json and prints it as
# the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p edgefleet-optimizer
ORT_DYLIB_PATH=$(hack/ort-lib.sh)
export ORT_DYLIB_PATH
datasets=$(hack/datasets.sh)
py=$(hack/python-env.sh)
mkdir -p bench-results
exec "$py" hack/bench_optimizer.py \
  --optimizer target/release/edgefleet-optimizer \
  --model optimizer/fixtures/fashion-cnn/model.onnx \
  --dataset "$datasets/fashion-mnist-test.npz" \
  --out bench-results/optimizer.json
