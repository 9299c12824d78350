#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, libFuzzer with coverage instrumentation on stable Rust: no
# sanitizer, so findings are panics, aborts, timeouts and memory over the limit) and runs each
# for SECONDS on a copy of its committed corpus. Writes bench-results/fuzz.json (inputs tried,
# crashes, hangs, peak RSS per target) and prints it last; exits non-zero on any finding, with
# the input that caused it under target/fuzz/artifacts/<target>/.
#
#   hack/fuzz.sh [SECONDS]        (make fuzz: 300 s a target)
#
# The targets are the functions in fuzz/targets; make test replays them on the corpus without
# instrumentation (sidecar/tests/fuzz_corpus.rs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."
seconds=${1:-300}
targets=(oip_request image_body onnx_model npz modelpack)
out=target/fuzz
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
# An explicit --target keeps the instrumentation out of build scripts and proc macros.
triple=$(rustc -vV | sed -n 's/^host: //p')
log "building the fuzz targets"
cargo build --release --manifest-path fuzz/Cargo.toml --target-dir "$out" --target "$triple" --bins --locked
mkdir -p bench-results
results=()
failed=0
for t in "${targets[@]}"; do
  corpus=$out/corpus/$t
  artifacts=$out/artifacts/$t
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  cp fuzz/corpus/"$t"/* "$corpus"/
  logfile=$out/$t.log
  log "fuzzing $t for ${seconds}s"
  set +e
  "$out/$triple/release/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$logfile" 2>&1
  status=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$logfile" | tail -1)
  crashes=$(find "$artifacts" -name 'crash-*' | wc -l)
  hangs=$(find "$artifacts" -name 'timeout-*' | wc -l)
  ooms=$(find "$artifacts" -name 'oom-*' | wc -l)
  units=$(find "$corpus" -type f | wc -l)
  if [[ $status != 0 || $crashes != 0 || $hangs != 0 || $ooms != 0 ]]; then
    failed=1
    log "$t: FINDING (exit $status): see $logfile and $artifacts"
    tail -30 "$logfile" >&2
  fi
  results+=("$(printf '{"target":"%s","seconds":%s,"inputs_tried":%s,"crashes":%s,"hangs":%s,"out_of_memory":%s,"peak_rss_mb":%s,"corpus_units":%s,"exit":%s}' \
    "$t" "$seconds" "${runs:-0}" "$crashes" "$hangs" "$ooms" "${rss:-0}" "$units" "$status")")
done
json=$(printf '{"area":"fuzz","machine":"%s cores","rustc":"%s","targets":[%s]}' "$(nproc)" "$(rustc --version | cut -d' ' -f2)" "$(IFS=,; echo "${results[*]}")")
echo "$json" >bench-results/fuzz.json
echo "$json"
exit $failed
