#!/usr/bin/env bash
# The pod sandbox image of the test ground's nodes, built here (no image comes from outside):
# the static pause binary of hack/build-node.sh as one layer, user 65535, pushed to REGISTRY.
# Prints its reference by digest (containerd's sandbox_image).
#
#   hack/pause-image.sh REGISTRY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
registry=${1:?usage: pause-image.sh REGISTRY}
bin=$("$here/build-node.sh")
crane=$("$here/build-tool.sh" crane)
version=$(cat "$bin/pause.version")
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-pause.XXXXXX")
trap 'rm -rf "$work"' EXIT
repo=$registry/edgefleet/pause
mkdir -p "$work/rootfs"
cp "$bin/pause-amd64" "$work/rootfs/pause"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/pause.tar" .
"$crane" append --insecure --oci-empty-base -f "$work/pause.tar" -t "$repo:$version-layer" >/dev/null 2>&1
"$crane" mutate --insecure "$repo:$version-layer" -t "$repo:$version" --entrypoint /pause \
  --user 65535:65535 --set-platform linux/amd64 >/dev/null 2>&1
echo "$repo@$("$crane" digest --insecure "$repo:$version")"
