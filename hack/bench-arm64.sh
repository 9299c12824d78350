#!/usr/bin/env bash
# `make bench-arm64`: the same candidates served by the amd64 sidecar and by the arm64 one
# (cross-built, run under qemu-user) on IMAGES Fashion-MNIST test images (default 1024): where
# top-1 and logits differ and each architecture's accuracy; and the shipped (edge profile,
# stripped) sidecar binary of each architecture. Writes bench-results/arm64.json and prints it.
#
#   hack/bench-arm64.sh [IMAGES]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."
images=${1:-1024}
mkdir -p bench-results
ORT_DYLIB_PATH=$(bash "$here/ort-lib.sh")
export ORT_DYLIB_PATH
log "shipped sidecar binaries (edge profile): amd64, then arm64"
cargo build -q --locked --profile edge -p edgefleet-sidecar
amd64=$(stat -c %s target/edge/edgefleet-sidecar)
arm64_dir=$(bash "$here/cross.sh" edge edgefleet-sidecar)
arm64=$(stat -c %s "$arm64_dir/edgefleet-sidecar")
log "answers on $images images"
answers=$(mktemp)
trap 'rm -f "$answers"' EXIT
ARM64_BENCH_IMAGES=$images ARM64_BENCH_OUT=$answers \
  cargo test -q --locked -p edgefleet-sidecar --test arm64 -- --ignored --exact bench_where_amd64_and_arm64_differ >&2
json=$(python3 - "$answers" "$amd64" "$arm64" "$(nproc)" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
result["sidecar_stripped_bytes"] = {"amd64": int(sys.argv[2]), "arm64": int(sys.argv[3])}
result["machine"] = f"{sys.argv[4]} cores x86_64; arm64 under qemu-user (Debian qemu-user-static)"
print(json.dumps(result))
PY
)
echo "$json" >bench-results/arm64.json
echo "$json"
