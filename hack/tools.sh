#!/usr/bin/env bash
# `make tools`: the command-line tools the README uses, in one directory to put on PATH:
# helm, kubeconform and crane (built from their Go modules, cached), and our kubectl plugin
# (`kubectl edgefleet`) and optimizer CLI. Prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."
dir=$PWD/target/tools
mkdir -p "$dir"
for t in helm kubeconform crane; do
  ln -sf "$(bash "$here/build-tool.sh" "$t")" "$dir/$t"
done
bash "$here/debug-build.sh" # the features `make test` builds them with: no second build
for b in kubectl-edgefleet edgefleet-optimizer; do
  ln -sf "$PWD/target/debug/$b" "$dir/$b"
done
echo "$dir"
