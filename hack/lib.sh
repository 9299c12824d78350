# Shared settings for the local test ground scripts. Sourced, never run.
K8S_VERSION=${K8S_VERSION:-1.34.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.4}
EDGEFLEET_CACHE=${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}
# Where `make up` keeps its state (pids, certs, data, logs); one environment per machine user.
EDGEFLEET_ENV_DIR=${EDGEFLEET_ENV_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/edgefleet/env}

log() { printf '[edgefleet] %s\n' "$*" >&2; }
die() { printf '[edgefleet] error: %s\n' "$*" >&2; exit 1; }

controlplane_bin_dir() {
  echo "$EDGEFLEET_CACHE/controlplane/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION/bin"
}

ORAS_VERSION=${ORAS_VERSION:-1.3.6}
oras_bin() {
  echo "$EDGEFLEET_CACHE/tools/oras-v$ORAS_VERSION/oras"
}
