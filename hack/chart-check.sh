#!/usr/bin/env bash
# `make chart-check`: the Helm chart is well-formed and every object it renders is valid against
# the pinned Kubernetes version's schemas and our CRDs; the Argo CD health check and the kstatus
# reading of captured EdgeModel statuses hold. No cluster needed.
#   helm lint --strict; helm template (several value sets) | kubeconform -strict
#   every manifest under examples/ | kubeconform -strict
#   values the chart's values.schema.json must refuse are refused
#   kubeconform refuses a manifest with an unknown field (the schemas are in force)
#   cargo test --test argocd (Lua health check + kstatus on captured statuses)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."
chart=charts/edgefleet
# lua5.1 for the Argo CD health check (a fresh machine runs this before anything else installs it).
"$here/install-deps.sh"

helm=$(bash "$here/build-tool.sh" helm)
kubeconform=$(bash "$here/build-tool.sh" kubeconform)

log "kubeconform schemas: Kubernetes v$K8S_VERSION (k8s.io/kubernetes swagger.json), our CRDs, ServiceMonitor (prometheus-operator v$PROMETHEUS_OPERATOR_VERSION), Application (Argo CD v$ARGOCD_VERSION)"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off
module_dir() { (cd /tmp && go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)",/\1/p'); }
k8s=$(module_dir "k8s.io/kubernetes@v$K8S_VERSION")
promop=$(module_dir "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION")
argocd=$(module_dir "github.com/argoproj/argo-cd/v3@v$ARGOCD_VERSION")
[[ -f $k8s/api/openapi-spec/swagger.json ]] || die "no swagger.json in k8s.io/kubernetes@v$K8S_VERSION"
schemas=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-schemas.XXXXXX")
trap 'rm -rf "$schemas"' EXIT
strict_dir=$schemas/v$K8S_VERSION-standalone-strict
cargo run -q -p edgefleet-testenv --bin kubeconform-schemas -- --swagger "$k8s/api/openapi-spec/swagger.json" \
  --crd "$promop/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
  --crd "$argocd/manifests/crds/application-crd.yaml" \
  $(printf -- '--crd %s ' $chart/crds/*.yaml) --out "$strict_dir"

validate() {
  "$kubeconform" -strict -summary -kubernetes-version "$K8S_VERSION" -schema-location "$schemas" "$@"
}

log "helm lint"
"$helm" lint --strict "$chart" --kube-version "$K8S_VERSION"

render() { "$helm" template edgefleet "$chart" --namespace edgefleet-system --kube-version "$K8S_VERSION" --include-crds "$@"; }
log "helm template | kubeconform -strict: defaults"
render | validate
log "helm template | kubeconform -strict: every option on"
digest=sha256:$(printf '%064d' 0)
render --set networkPolicy.enabled=true --set serviceMonitor.enabled=true --set watchNamespace=vision \
  --set 'sidecar.namespaces={vision,factory}' --set 'sidecar.plainHttpRegistries={registry.local:5000}' \
  --set registryCA.secretName=registry-ca --set signing.secretName=edgefleet-signing --set image.operator.digest=$digest \
  --set image.optimizer.digest=$digest --set image.sidecar.digest=$digest | validate
log "helm template | kubeconform -strict: one replica, no webhook, no device classes"
render --set replicas=1 --set webhook.enabled=false --set deviceClasses.create=false | validate

log "kubeconform -strict: every manifest under examples/ (Argo CD Applications included)"
find examples -name '*.yaml' | sort | xargs "$kubeconform" -strict -summary -kubernetes-version "$K8S_VERSION" -schema-location "$schemas"

log "values.schema.json refuses bad values"
refuse() {
  local out
  if out=$(render "$@" 2>&1 >/dev/null); then die "helm template accepted $*"; fi
  grep -q "values don't meet the specifications of the schema" <<<"$out" || die "helm template $* failed for another reason: $out"
  echo "  refused: $*" >&2
}
refuse --set replicas=0
refuse --set image.sidecar.digest=latest
refuse --set logFormat=xml
refuse --set webhook.port=70000
refuse --set unknownKey=1

log "kubeconform refuses an unknown field"
bad=$(render | sed 's/^  revisionHistoryLimit: 5$/  revisionHistoryLimt: 5/')
grep -q revisionHistoryLimt <<<"$bad" || die "could not plant the unknown field"
if validate <<<"$bad" >/dev/null 2>&1; then die "kubeconform accepted a Deployment with an unknown field"; fi
echo "  refused: Deployment.spec.revisionHistoryLimt" >&2

log "Argo CD health check and kstatus on captured EdgeModel statuses"
[[ ${CHART_CHECK_SKIP_TESTS:-0} == 1 ]] || cargo test -q --test argocd
log "chart-check passed"
