#!/usr/bin/env bash
# Installs the Debian packages the test ground needs, only when they are missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

want=()
command -v docker-registry >/dev/null || want+=(docker-registry)
command -v htpasswd >/dev/null || want+=(apache2-utils)
command -v openssl >/dev/null || want+=(openssl)
command -v curl >/dev/null || want+=(curl)
# Argo CD runs health checks in Lua 5.1 (gopher-lua); the tests run ours with the reference interpreter.
command -v lua5.1 >/dev/null || want+=(lua5.1)
[[ -d /usr/share/datasets/fashion-mnist ]] || want+=(dataset-fashion-mnist)
# The test ground's nodes: container runtime, CNI plugins, kube-proxy's iptables and conntrack,
# and socat for the forwarder from the nodes' network to the API server.
command -v containerd >/dev/null || want+=(containerd)
command -v runc >/dev/null || want+=(runc)
[[ -x /usr/lib/cni/bridge ]] || want+=(containernetworking-plugins)
command -v iptables >/dev/null || want+=(iptables)
command -v conntrack >/dev/null || want+=(conntrack)
command -v socat >/dev/null || want+=(socat)
command -v ip >/dev/null || want+=(iproute2)
[[ ${#want[@]} -eq 0 ]] && exit 0

log "installing Debian packages: ${want[*]}"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
