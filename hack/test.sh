#!/usr/bin/env bash
# `make test`: lint, chart-check, then every test of the workspace (the fuzz targets replay their
# corpus and mutations of it in sidecar/tests/fuzz_corpus.rs; `make fuzz` runs them under
# libFuzzer). Integration tests start (or reuse) the local control plane through the testenv
# crate; when this script started it, it stops it again (set EDGEFLEET_KEEP_ENV=1 to keep it
# running).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."

was_running=0
if [[ -f $EDGEFLEET_ENV_DIR/env.sh ]] && bash "$here/up.sh" >/dev/null 2>&1; then
  was_running=1
fi
cleanup() {
  if [[ $was_running == 0 && ${EDGEFLEET_KEEP_ENV:-0} != 1 ]]; then
    bash "$here/down.sh" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

started=$(date +%s)
log "lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
log "chart-check"
bash "$here/chart-check.sh"
log "Python tools, ONNX Runtime library and datasets"
ORT_DYLIB_PATH=$(bash "$here/ort-lib.sh")
export ORT_DYLIB_PATH
bash "$here/datasets.sh" >/dev/null
log "control plane"
bash "$here/up.sh" >/dev/null
log "tests"
results=$(mktemp)
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$results"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
summary=$(awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "%d passed, %d failed, %d skipped", p, f, i}' "$results")
rm -f "$results"
log "make test finished in $(($(date +%s) - started))s"
echo "tests: $summary"
exit "$status"
