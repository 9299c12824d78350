#!/usr/bin/env bash
# make bench-rollout PODS=N: the rollout controller (release build, run alone) against the local
# control plane with N simulated sidecars. See benches/rollout.rs for what is measured. Writes
# bench-results/rollout-N.json and prints it as the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source hack/lib.sh
pods=${1:-1000}
cargo build --release -q --bin edgefleet-operator
eval "$(bash hack/up.sh)"
cargo bench -q --bench rollout -- --pods "$pods"
