#!/usr/bin/env bash
# Builds (once) the datasets tests and benchmarks use, from Debian's dataset-fashion-mnist, into
# the cache. Prints the dataset directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
"$here/install-deps.sh"
out=$EDGEFLEET_CACHE/datasets
mkdir -p "$out"
if [[ ! -f $out/fashion-mnist-test.npz ]]; then
  py=$("$here/python-env.sh")
  log "building $out/fashion-mnist-test.npz from /usr/share/datasets/fashion-mnist"
  (cd "$here/../optimizer/fixtures" && "$py" make_npz.py --split t10k --out "$out/fashion-mnist-test.npz" >&2)
fi
echo "$out"
