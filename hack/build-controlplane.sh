#!/usr/bin/env bash
# Builds the local test ground's control plane from Go modules, once per version, into a cache
# outside the repository:
#   kube-apiserver, kube-controller-manager, kube-scheduler  from k8s.io/kubernetes  (wrapper module, lib.sh)
#   etcd                                     from go.etcd.io/etcd/server/v3
# Prints the bin directory on stdout. Progress goes to stderr.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bin=$(controlplane_bin_dir)
if [[ -x $bin/kube-apiserver && -x $bin/kube-controller-manager && -x $bin/kube-scheduler && -x $bin/etcd ]]; then
  echo "$bin"
  exit 0
fi

log "building control plane (kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION) into $bin"
log "first build only: this takes several minutes on 2 cores"
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-cp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
rm -rf "$bin.partial"
mkdir -p "$bin.partial"
# Keep what an earlier build of this version made (a binary added to the list builds alone).
[[ -d $bin ]] && cp -a "$bin/." "$bin.partial/"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off

# --- kubernetes -------------------------------------------------------------------------------
k8s_wrapper_module "$work/k8s"
ldflags=$(k8s_ldflags)
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  [[ -x $bin.partial/$cmd ]] && continue
  log "go build $cmd"
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

# --- etcd -------------------------------------------------------------------------------------
mkdir -p "$work/etcd"
printf 'module edgefleet.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" >"$work/etcd/go.mod"
[[ -x $bin.partial/etcd ]] || log "go build etcd"
[[ -x $bin.partial/etcd ]] || (cd "$work/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" go.etcd.io/etcd/server/v3)

rm -rf "$bin"
mv "$bin.partial" "$bin"
log "control plane built in $(($(date +%s) - started))s"
echo "$bin"
