#!/usr/bin/env bash
# Builds one third-party Go tool from its Go module, once per version, into a cache outside the
# repository, and prints the binary's path on stdout (progress goes to stderr).
#
#   hack/build-tool.sh helm|kubeconform|crane|kstatus|oras|cosign
#
# kstatus is our own few lines (hack/kstatus/main.go) around sigs.k8s.io/cli-utils' kstatus
# library: the reference for what kstatus-aware tools (Flux, kpt, cli-utils) make of a status.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

name=${1:?usage: build-tool.sh helm|kubeconform|crane|kstatus|oras|cosign}
case $name in
  helm) module=helm.sh/helm/v3 version=$HELM_VERSION pkg=helm.sh/helm/v3/cmd/helm ;;
  kubeconform) module=github.com/yannh/kubeconform version=$KUBECONFORM_VERSION pkg=github.com/yannh/kubeconform/cmd/kubeconform ;;
  crane) module=github.com/google/go-containerregistry version=$CRANE_VERSION pkg=github.com/google/go-containerregistry/cmd/crane ;;
  kstatus) module=sigs.k8s.io/cli-utils version=$CLI_UTILS_VERSION pkg=. ;;
  oras) module=oras.land/oras version=$ORAS_VERSION pkg=oras.land/oras/cmd/oras ;;
  cosign) module=github.com/sigstore/cosign/v3 version=$COSIGN_VERSION pkg=github.com/sigstore/cosign/v3/cmd/cosign ;;
  *) die "unknown tool: $name" ;;
esac

out=$(tool_bin "$name")
[[ -x $out ]] && { echo "$out"; exit 0; }
# One build at a time (tests call this concurrently); whoever waited finds the binary built.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
[[ -x $out ]] && { echo "$out"; exit 0; }

log "building $name from $module v$version into $(dirname "$out")"
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-$name-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
printf 'module edgefleet.local/%s\n\ngo 1.24\n\nrequire %s v%s\n' "$name" "$module" "$version" >"$work/go.mod"
[[ $name == kstatus ]] && cp "$here/kstatus/main.go" "$work/"
(cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out.partial" "$pkg")
mv "$out.partial" "$out"
echo "$out"
