# Shared settings for the local test ground scripts. Sourced, never run.
K8S_VERSION=${K8S_VERSION:-1.34.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.4}
EDGEFLEET_CACHE=${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}
# Where `make up` keeps its state (pids, certs, data, logs); one environment per machine user.
EDGEFLEET_ENV_DIR=${EDGEFLEET_ENV_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/edgefleet/env}

log() { printf '[edgefleet] %s\n' "$*" >&2; }

# Forgets the variables cargo sets for a test or build script it runs. A cargo started from a
# test (the tests build binaries and images) inherits them, and build scripts that watch them
# (ring's rerun-if-env-changed=CARGO_MANIFEST_DIR, CARGO_PKG_NAME, …) would rebuild everything
# above them: once for that cargo, and again for the next one started from a shell.
cargo_env_reset() {
  local v
  for v in $(compgen -e); do
    case $v in
      CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_NAME | CARGO_BIN_EXE_* | \
        CARGO_CFG_* | CARGO_FEATURE_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | \
        CARGO_RUSTC_CURRENT_DIR | OUT_DIR) unset "$v" ;;
    esac
  done
}
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
# Reference signer/verifier for interop tests of our cosign-compatible signatures.
COSIGN_VERSION=${COSIGN_VERSION:-3.1.2}
tool_bin() {
  local version
  case $1 in
    oras) version=$ORAS_VERSION ;;
    helm) version=$HELM_VERSION ;;
    kubeconform) version=$KUBECONFORM_VERSION ;;
    crane) version=$CRANE_VERSION ;;
    cosign) version=$COSIGN_VERSION ;;
    kstatus) version=$CLI_UTILS_VERSION-$(sha256sum "$(dirname "${BASH_SOURCE[0]}")/kstatus/main.go" | cut -c1-8) ;;
  esac
  echo "$EDGEFLEET_CACHE/tools/$1-v$version/$1"
}
# Source of the ServiceMonitor CRD the chart's optional ServiceMonitor is validated against.
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-0.85.0}
# Source of the Argo CD Application CRD the GitOps examples are validated against.
ARGOCD_VERSION=${ARGOCD_VERSION:-3.5.7}

# Writes a wrapper go.mod into $1 that requires k8s.io/kubernetes v$K8S_VERSION and replaces
# each of its ./staging modules with the published v0.X.Y tag (the module zip lacks ./staging);
# the list is read from the kubernetes go.mod itself so it never drifts. Prints nothing.
k8s_wrapper_module() {
  local dir=$1 k8s_mod staging_version count
  mkdir -p "$dir"
  k8s_mod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [[ -f $k8s_mod ]] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"
  staging_version="v0.${K8S_VERSION#1.}" # 1.34.4 -> v0.34.4
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
  } >"$dir/go.mod"
  count=$(grep -c "=> k8s.io" "$dir/go.mod")
  log "wrapper go.mod replaces $count staging modules with $staging_version"
}

# The directory of the kubernetes module's source (downloaded by k8s_wrapper_module).
k8s_module_dir() {
  echo "$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION"
}

# The local test ground's nodes: real kubelets, containerd and kube-proxy, each in a network
# namespace of its own. Binaries are built once per version by hack/build-node.sh.
# The pause binary comes from the same module (build/pause), so the version names both.
node_bin_dir() {
  echo "$EDGEFLEET_CACHE/nodes/k8s-v$K8S_VERSION/bin"
}

# -ldflags for binaries of the kubernetes module: stripped, with the version they report.
k8s_ldflags() {
  local minor
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  echo "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}

# The test ground's private network (hack/nodes.sh draws it). Nothing outside these ranges and
# loopback is ever a target.
EDGEFLEET_HUB_NS=edgefleet-hub
HUB_IP=10.77.0.1             # the hub's bridge: the registry, the API server's forwarder
HUB_REGISTRY_PORT=5000
HOST_LINK_IP=10.76.0.1       # the host's end of its veth to the hub
HUB_LINK_IP=10.76.0.2
SERVICE_RANGE=10.0.0.0/24    # the API server's --service-cluster-ip-range
