#!/usr/bin/env bash
# Builds what the test ground's nodes run that Debian does not ship, once per Kubernetes version,
# into a cache outside the repository:
#   kubelet, kube-proxy  from k8s.io/kubernetes (the control plane's wrapper module, lib.sh)
#   pause                the pod sandbox's init process, from the same module's build/pause/linux
#                        (a few lines of C, linked statically), amd64 and arm64
# containerd, runc and the CNI plugins come from Debian (hack/install-deps.sh).
# Prints the bin directory on stdout. Progress goes to stderr.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bin=$(node_bin_dir)

# `hack/build-node.sh arm64-kubelet`: the kubelet for the test ground's arm64 nodes (run under
# qemu-user next to the amd64 containerd; docs/arm64.md), built once beside the others.
if [[ ${1:-} == arm64-kubelet ]]; then
  "$0" >/dev/null
  if [[ ! -x $bin/kubelet-arm64 ]]; then
    exec 9>"$bin.arm64.lock"
    flock 9
    if [[ ! -x $bin/kubelet-arm64 ]]; then
      log "building the arm64 kubelet (kubernetes v$K8S_VERSION) into $bin: a few minutes, once"
      work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-node-build.XXXXXX")
      trap 'rm -rf "$work"' EXIT
      export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off
      k8s_wrapper_module "$work/k8s"
      (cd "$work/k8s" && GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -ldflags "$(k8s_ldflags)" \
        -o "$bin/kubelet-arm64.partial" "k8s.io/kubernetes/cmd/kubelet")
      mv "$bin/kubelet-arm64.partial" "$bin/kubelet-arm64"
    fi
  fi
  echo "$bin/kubelet-arm64"
  exit 0
fi

if [[ -x $bin/kubelet && -x $bin/kube-proxy && -x $bin/pause-amd64 && -f $bin/pause.version ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$(dirname "$bin")"
exec 9>"$bin.lock"
flock 9

log "building node binaries (kubelet, kube-proxy, pause; kubernetes v$K8S_VERSION) into $bin"
log "first build only: a few minutes on 2 cores (packages shared with the control plane are cached)"
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-node-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
rm -rf "$bin.partial"
mkdir -p "$bin.partial"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off

k8s_wrapper_module "$work/k8s"
ldflags=$(k8s_ldflags)
for cmd in kubelet kube-proxy; do
  log "go build $cmd"
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

# --- pause ------------------------------------------------------------------------------------
src=$(k8s_module_dir)/build/pause
tag=$(sed -n 's/^TAG ?= *//p' "$src/Makefile")
[[ -n $tag ]] || die "no TAG in $src/Makefile"
log "gcc pause $tag (static)"
gcc -Os -Wall -Werror -static -DVERSION="v$tag-edgefleet" -o "$bin.partial/pause-amd64" "$src/linux/pause.c"
if command -v aarch64-linux-gnu-gcc >/dev/null; then
  aarch64-linux-gnu-gcc -Os -Wall -Werror -static -DVERSION="v$tag-edgefleet" -o "$bin.partial/pause-arm64" "$src/linux/pause.c"
fi
echo "$tag" >"$bin.partial/pause.version"

rm -rf "$bin"
mv "$bin.partial" "$bin"
log "node binaries built in $(($(date +%s) - started))s"
echo "$bin"
