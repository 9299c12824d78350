#!/usr/bin/env bash
# Starts (or reuses) the local test ground: etcd, kube-apiserver (client-cert admin, RBAC on),
# kube-controller-manager and a docker-registry, all on free 127.0.0.1 ports. Prints shell lines
# for `eval "$(make -s up)"`; everything else goes to stderr.
#
# Idempotent: when every recorded process is alive and the API server is ready it only prints the
# lines again. Each process runs under `timeout` (EDGEFLEET_ENV_TTL, default 8h) so a forgotten
# environment ends by itself; `make down` stops exactly the recorded pids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

dir=$EDGEFLEET_ENV_DIR
mkdir -p "$dir"
exec 9>"$dir/lock"
flock 9 # concurrent test binaries share one environment

print_env() {
  cat "$dir/env.sh"
}

healthy() {
  [[ -f $dir/env.sh && -f $dir/pids ]] || return 1
  local pid
  while read -r name pid; do
    kill -0 "$pid" 2>/dev/null || { log "$name (pid $pid) is not running"; return 1; }
  done <"$dir/pids"
  # shellcheck disable=SC1091
  source "$dir/env.sh"
  curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$(cat "$dir/apiserver.port")/readyz" >/dev/null 2>&1 || return 1
  curl -fsS --max-time 5 "http://$EDGEFLEET_REGISTRY/v2/" >/dev/null 2>&1 || return 1
}

if healthy; then
  log "reusing the running environment in $dir"
  print_env
  exit 0
fi

"$here/install-deps.sh"
bin=$("$here/build-controlplane.sh")
started=$(date +%s)

# Whatever is left of an earlier environment goes first (only our own recorded pids).
"$here/down.sh" >/dev/null 2>&1 || true

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- certificates (kept across restarts) ------------------------------------------------------
pki=$dir/pki
mkdir -p "$pki"
if [[ ! -f $pki/ca.crt ]]; then
  log "generating certificates in $pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=edgefleet-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  sign() { # name subject [san]
    local name=$1 subj=$2 san=${3:-}
    openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
    local ext=$pki/$name.ext
    if [[ -n $san ]]; then
      printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >"$ext"
    fi
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$ext"
  }
  sign apiserver "/CN=kube-apiserver" "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1"
  sign admin "/O=system:masters/CN=edgefleet-admin"
  sign controller-manager "/CN=system:kube-controller-manager"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi

kubeconfig() { # file user port
  local file=$1 user=$2 port=$3
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: edgefleet-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: edgefleet-local
  context: {cluster: edgefleet-local, user: $user, namespace: default}
current-context: edgefleet-local
KUBECONFIG
}

ttl=${EDGEFLEET_ENV_TTL:-8h}
: >"$dir/pids"
mkdir -p "$dir/logs"
start() { # name cmd...
  local name=$1
  shift
  setsid timeout --signal=TERM "$ttl" "$@" >"$dir/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo "$name $!" >>"$dir/pids"
  log "started $name (pid $!, log $dir/logs/$name.log)"
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      log "$what did not become ready within ${seconds}s; last log lines:"
      tail -n 20 "$dir/logs/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

# --- etcd -------------------------------------------------------------------------------------
etcd_port=$(free_port)
etcd_peer=$(free_port)
start etcd "$bin/etcd" --name edgefleet --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "edgefleet=http://127.0.0.1:$etcd_peer" --listen-metrics-urls "" \
  --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver ---------------------------------------------------------------------------
api_port=$(free_port)
echo "$api_port" >"$dir/apiserver.port"
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --allow-privileged=true \
  --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
  --v 1
wait_for kube-apiserver 120 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://127.0.0.1:$api_port/readyz"

kubeconfig "$dir/kubeconfig" admin "$api_port"
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager "$api_port"

# --- kube-controller-manager (garbage collector, Job controller, service-account tokens) -------
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ttl' \
  --v 1

# --- registry ---------------------------------------------------------------------------------
reg_port=$(free_port)
mkdir -p "$dir/registry"
cat >"$dir/registry.yml" <<REGISTRY
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$reg_port
REGISTRY
start registry docker-registry serve "$dir/registry.yml"
wait_for registry 30 curl -fsS "http://127.0.0.1:$reg_port/v2/"

# The controller-manager is ready once it created the default ServiceAccount.
wait_for kube-controller-manager 90 env KUBECONFIG="$dir/kubeconfig" kubectl get serviceaccount default -n default

cat >"$dir/env.sh" <<ENV
export KUBECONFIG=$dir/kubeconfig
export EDGEFLEET_REGISTRY=127.0.0.1:$reg_port
ENV
log "environment ready in $(($(date +%s) - started))s (state in $dir)"
print_env
