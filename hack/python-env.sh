#!/usr/bin/env bash
# Creates (once) a virtualenv with hack/requirements.txt, cached outside the repository and keyed
# by the requirements' hash. Prints the venv's python on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
key=$(sha256sum "$here/requirements.txt" | cut -c1-12)
venv=$EDGEFLEET_CACHE/venv-$key
if [[ ! -x $venv/bin/python || ! -f $venv/.complete ]]; then
  log "creating Python environment $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
