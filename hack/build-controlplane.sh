#!/usr/bin/env bash
# Builds the local test ground's control plane from Go modules, once per version, into a cache
# outside the repository:
#   kube-apiserver, kube-controller-manager  from k8s.io/kubernetes  (wrapper module, see below)
#   etcd                                     from go.etcd.io/etcd/server/v3
# Prints the bin directory on stdout. Progress goes to stderr.
#
# k8s.io/kubernetes replaces every k8s.io/* staging module with ./staging/..., a path that does not
# exist in the published module zip. The wrapper go.mod therefore replaces each of them with its
# published v0.X.Y tag; the list is read from the kubernetes go.mod itself so it never drifts.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bin=$(controlplane_bin_dir)
if [[ -x $bin/kube-apiserver && -x $bin/kube-controller-manager && -x $bin/etcd ]]; then
  echo "$bin"
  exit 0
fi

log "building control plane (kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION) into $bin"
log "first build only: this takes several minutes on 2 cores"
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-cp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin.partial"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off

# --- kubernetes -------------------------------------------------------------------------------
k8s_mod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
[[ -f $k8s_mod ]] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"
staging_version="v0.${K8S_VERSION#1.}"  # 1.34.4 -> v0.34.4
mkdir -p "$work/k8s"
{
  echo "module edgefleet.local/controlplane"
  echo
  grep -m1 '^go ' "$k8s_mod"
  echo
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  echo
  echo "replace ("
  sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9.-]*\) => ./staging/.*|\t\1 => \1 '"$staging_version"'|p' "$k8s_mod"
  echo ")"
} >"$work/k8s/go.mod"
count=$(grep -c "=> k8s.io" "$work/k8s/go.mod")
log "wrapper go.mod replaces $count staging modules with $staging_version"
minor=$(cut -d. -f2 <<<"$K8S_VERSION")
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
for cmd in kube-apiserver kube-controller-manager; do
  log "go build $cmd"
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

# --- etcd -------------------------------------------------------------------------------------
mkdir -p "$work/etcd"
printf 'module edgefleet.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" >"$work/etcd/go.mod"
log "go build etcd"
(cd "$work/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" go.etcd.io/etcd/server/v3)

rm -rf "$bin"
mv "$bin.partial" "$bin"
log "control plane built in $(($(date +%s) - started))s"
echo "$bin"
