#!/usr/bin/env bash
# make bench-sidecar: edgefleet-sidecar as shipped (profile `edge`) against the same runtime
# called in-process, for the Fashion-MNIST CNN and EfficientNet-Lite0 (BENCH_EFFICIENTNET=0
# skips it), fp32 and int8, with tract and with ONNX Runtime. The int8 models are what the optimizer makes for each
# runtime: int8-static, gated at a 2-point drop for the CNN; for EfficientNet-Lite0 plain
# int8-static on 1,000 test images with no accuracy search (--max-drop 1), since the search with
# tract takes tens of minutes and this benchmark is about serving speed (`make bench-optimizer`
# is about accuracy). Writes bench-results/sidecar.json and prints it as the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source hack/lib.sh
# The sidecar as shipped (profile `edge`: small, tract kernels at full speed); the optimizer
# that makes the int8 models in release.
cargo build --profile edge -q -p edgefleet-sidecar
cargo build --release -q -p edgefleet-optimizer
ORT_DYLIB_PATH=$(hack/ort-lib.sh)
export ORT_DYLIB_PATH
datasets=$(hack/datasets.sh)
py=$(hack/python-env.sh)
optimizer=target/release/edgefleet-optimizer
work=$EDGEFLEET_CACHE/bench-sidecar
mkdir -p "$work" bench-results

# int8 for each runtime, cached by the optimizer binary's and the model's digests.
int8() { # name model dataset device-class runtime max-drop
  local name=$1 model=$2 data=$3 class=$4 rt=$5 drop=$6
  local key
  key=$(cat "$optimizer" "$model" | sha256sum | cut -c1-12)
  local out=$work/$name-$rt-int8-drop$drop-$key
  if [[ ! -f $out/model.onnx ]]; then
    log "optimize $name for $rt (int8-static)"
    "$optimizer" optimize --model "$model" --dataset "$data" --device-class "$class" \
      --techniques int8-static --max-drop "$drop" --out "$out.partial" >"$work/$name-$rt.log" 2>&1 ||
      { cat "$work/$name-$rt.log" >&2; exit 1; }
    rm -rf "$out" && mv "$out.partial" "$out"
  fi
  echo "$out/model.onnx"
}

cnn=$root/optimizer/fixtures/fashion-cnn/model.onnx
cnn_data=$datasets/fashion-mnist-test.npz
cases=$work/cases.json
{
  echo "["
  echo "{\"model\":\"fashion-cnn\",\"variant\":\"fp32\",\"runtime\":\"tract\",\"path\":\"$cnn\"},"
  echo "{\"model\":\"fashion-cnn\",\"variant\":\"fp32\",\"runtime\":\"onnxruntime\",\"path\":\"$cnn\"},"
  echo "{\"model\":\"fashion-cnn\",\"variant\":\"int8\",\"runtime\":\"tract\",\"path\":\"$(int8 cnn "$cnn" "$cnn_data" cpu-int8 tract 0.02)\"},"
  echo -n "{\"model\":\"fashion-cnn\",\"variant\":\"int8\",\"runtime\":\"onnxruntime\",\"path\":\"$(int8 cnn "$cnn" "$cnn_data" hack/bench/cpu-onnxruntime.yaml onnxruntime 0.02)\"}"
  if [[ ${BENCH_EFFICIENTNET:-1} == 1 ]]; then
    dir=$(hack/efficientnet.sh)
    small=$work/efficientnet-1000.npz
    [[ -f $small ]] || "$py" -c 'import sys, numpy as np; d = np.load(sys.argv[1]); np.savez(sys.argv[2], x=d["x"][:1000], y=d["y"][:1000])' \
      "$dir/fashion-mnist-test.npz" "$small"
    echo ","
    echo "{\"model\":\"efficientnet-lite0\",\"variant\":\"fp32\",\"runtime\":\"tract\",\"path\":\"$dir/model.onnx\"},"
    echo "{\"model\":\"efficientnet-lite0\",\"variant\":\"fp32\",\"runtime\":\"onnxruntime\",\"path\":\"$dir/model.onnx\"},"
    echo "{\"model\":\"efficientnet-lite0\",\"variant\":\"int8\",\"runtime\":\"tract\",\"path\":\"$(int8 efficientnet "$dir/model.onnx" "$small" cpu-int8 tract 1)\"},"
    echo -n "{\"model\":\"efficientnet-lite0\",\"variant\":\"int8\",\"runtime\":\"onnxruntime\",\"path\":\"$(int8 efficientnet "$dir/model.onnx" "$small" hack/bench/cpu-onnxruntime.yaml onnxruntime 1)\"}"
  fi
  echo "]"
} >"$cases"
BENCH_CASES=$cases SIDECAR_BIN=$root/target/edge/edgefleet-sidecar \
  cargo bench -q -p edgefleet-sidecar --bench sidecar
