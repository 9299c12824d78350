#!/usr/bin/env bash
# Builds `oras` (the ORAS project's OCI artifact CLI) from its Go module, once per version, into a
# cache outside the repository. Tests use it as the third-party client that must read what we
# push and publish what we pull. Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out=$(oras_bin)
if [[ -x $out ]]; then
  echo "$out"
  exit 0
fi
# One build at a time (tests call this concurrently); whoever waited finds the binary built.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [[ -x $out ]]; then
  echo "$out"
  exit 0
fi
log "building oras v$ORAS_VERSION from oras.land/oras into $(dirname "$out")"
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-oras-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off
printf 'module edgefleet.local/oras\n\ngo 1.24\n\nrequire oras.land/oras v%s\n' "$ORAS_VERSION" >"$work/go.mod"
(cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.partial" oras.land/oras/cmd/oras)
mv "$out.partial" "$out"
echo "$out"
