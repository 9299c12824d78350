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
cross_pid=""
cleanup() {
  [[ -z $cross_pid ]] || kill "$cross_pid" 2>/dev/null || true
  if [[ $was_running == 0 && ${EDGEFLEET_KEEP_ENV:-0} != 1 ]]; then
    bash "$here/down.sh" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

started=$(date +%s)
# The arm64 binaries of the images (hack/cross.sh's default run, the longest single build of
# the suite) start now, at the lowest priority, beside lint and the host build: they take the
# cores those leave idle (single-crate stretches, links, the tests' waits on the cluster). The
# first test that needs them (hack/images.sh) waits on cargo's lock of target/cross, then finds
# them built. Debian packages first, so that no two apt runs race for dpkg's lock.
bash "$here/install-deps.sh"
bash "$here/cross.sh" --env >/dev/null
mkdir -p target
nice -n 19 bash "$here/cross.sh" dev >target/cross-build.log 2>&1 &
cross_pid=$!
log "cross build of the arm64 binaries started in the background (target/cross-build.log)"
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
# Two runs over the whole workspace (so features resolve as in one): first every test that
# needs no container image, while the cross build above finishes beside them; then the tests
# that run the images (hack/images.sh, amd64 and arm64), whatever package they are in. Every
# integration test file is in exactly one of the two lists.
late=(arm64 chart edge heartbeat pipeline quickstart rollout webhook)
early=()
for f in tests/*.rs */tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ " ${late[*]} ${early[*]} " == *" $name "* ]] || early+=("$name")
done
results=$(mktemp)
set +e
cargo test --workspace --no-fail-fast --lib --bins $(printf -- '--test %s ' "${early[@]}") 2>&1 | tee "$results"
status=${PIPESTATUS[0]}
log "tests that run the images"
cargo test --workspace --no-fail-fast $(printf -- '--test %s ' "${late[@]}") 2>&1 | tee -a "$results"
late_status=${PIPESTATUS[0]}
((status != 0)) || status=$late_status
set -e
# One closing line for the whole run (cargo prints one per test binary).
if ! wait "$cross_pid" 2>/dev/null; then
  log "the background cross build failed or was stopped (target/cross-build.log); the tests that needed it ran it again"
fi
cross_pid=""
summary=$(awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "%d passed, %d failed, %d skipped", p, f, i}' "$results")
rm -f "$results"
log "make test finished in $(($(date +%s) - started))s"
echo "tests: $summary"
exit "$status"
