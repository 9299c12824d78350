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

# Third-party Go tools, built from their modules by hack/build-tool.sh.
ORAS_VERSION=${ORAS_VERSION:-1.3.6}
HELM_VERSION=${HELM_VERSION:-3.22.0}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-0.8.0}
CRANE_VERSION=${CRANE_VERSION:-0.22.1}
CLI_UTILS_VERSION=${CLI_UTILS_VERSION:-0.37.2}
tool_bin() {
  local version
  case $1 in
    oras) version=$ORAS_VERSION ;;
    helm) version=$HELM_VERSION ;;
    kubeconform) version=$KUBECONFORM_VERSION ;;
    crane) version=$CRANE_VERSION ;;
    kstatus) version=$CLI_UTILS_VERSION-$(sha256sum "$(dirname "${BASH_SOURCE[0]}")/kstatus/main.go" | cut -c1-8) ;;
  esac
  echo "$EDGEFLEET_CACHE/tools/$1-v$version/$1"
}
# Source of the ServiceMonitor CRD the chart's optional ServiceMonitor is validated against.
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-0.85.0}
# Source of the Argo CD Application CRD the GitOps examples are validated against.
ARGOCD_VERSION=${ARGOCD_VERSION:-3.5.7}
