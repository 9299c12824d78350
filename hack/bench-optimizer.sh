#!/usr/bin/env bash
# make bench-optimizer: the optimizer per device class on the committed Fashion-MNIST CNN and the
# EfficientNet-Lite0 fixture (BENCH_EFFICIENTNET=0 skips it), every passing candidate re-measured
# with tract and ONNX Runtime at 1 thread, and ONNX Runtime's own Python quantizers on the same
# data as the peer. Writes bench-results/optimizer.json and prints it as
# the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p edgefleet-optimizer
ORT_DYLIB_PATH=$(hack/ort-lib.sh)
export ORT_DYLIB_PATH
datasets=$(hack/datasets.sh)
py=$(hack/python-env.sh)
efficientnet=()
if [[ ${BENCH_EFFICIENTNET:-1} == 1 ]]; then
  dir=$(hack/efficientnet.sh)
  efficientnet=(--efficientnet "$dir/model.onnx" --efficientnet-dataset "$dir/fashion-mnist-test.npz")
fi
mkdir -p bench-results
exec "$py" hack/bench_optimizer.py \
  --optimizer target/release/edgefleet-optimizer \
  --cnn optimizer/fixtures/fashion-cnn/model.onnx \
  --cnn-dataset "$datasets/fashion-mnist-test.npz" \
  --cpu-onnxruntime hack/bench/cpu-onnxruntime.yaml \
  "${efficientnet[@]}" \
  --out bench-results/optimizer.json
