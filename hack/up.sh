#!/usr/bin/env bash
# Starts (or reuses) the local test ground: etcd, kube-apiserver (client-cert admin, Node and RBAC
# authorization), kube-controller-manager and kube-scheduler on free 127.0.0.1 ports; the private network of
# hack/nodes.sh with a docker-registry inside it (10.77.0.1:5000); and NODES real nodes (default
# 4: kubelet, containerd, kube-proxy, each node in a network namespace of its own; the last
# ARM64_NODES of them, default 1, arm64 nodes) that pull the pod sandbox image built here
# (build/pause of the kubernetes module). Prints shell lines for
# `eval "$(make -s up)"`; everything else goes to stderr.
#
# Idempotent: when every recorded process is alive, the API server is ready and every node is
# Ready, it only prints the lines again. Each process runs under `timeout` (EDGEFLEET_ENV_TTL,
# default 8h) so a forgotten environment ends by itself; `make down` stops exactly the recorded
# processes and removes the namespaces, links, mounts and cgroups it made.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

dir=$EDGEFLEET_ENV_DIR
mkdir -p "$dir"
exec 9>"$dir/lock"
flock 9 # concurrent test binaries share one environment

nodes=${NODES:-4}
[[ $nodes =~ ^[0-9]+$ ]] && ((nodes <= 16)) || die "NODES must be a number from 0 to 16, not '$nodes'"
# The last ARM64_NODES of them are arm64 nodes (an arm64 kubelet under qemu-user beside the
# node's containerd, which runs arm64 images through the kernel's qemu handler; docs/arm64.md).
arm64_nodes=${ARM64_NODES:-1}
((nodes > 0)) || arm64_nodes=0
[[ $arm64_nodes =~ ^[0-9]+$ ]] && ((arm64_nodes <= nodes)) || die "ARM64_NODES must be a number from 0 to NODES ($nodes), not '$arm64_nodes'"
# The architecture of node I.
node_arch() { if (($1 >= nodes - arm64_nodes)); then echo arm64; else echo amd64; fi; }

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
  [[ $(cat "$dir/nodes.count" 2>/dev/null) == "$nodes" ]] || { log "want $nodes nodes"; return 1; }
  local i p
  for ((i = 0; i < nodes; i++)); do
    for p in containerd kubelet kube-proxy; do
      kill -0 "$(cat "$dir/nodes/edge-$i/$p.pid" 2>/dev/null || echo 0)" 2>/dev/null \
        || { log "$p of edge-$i is not running"; return 1; }
    done
    [[ $(cat "$dir/nodes/edge-$i/arch" 2>/dev/null || echo amd64) == "$(node_arch "$i")" ]] \
      || { log "want edge-$i to be $(node_arch "$i")"; return 1; }
  done
}

if healthy; then
  log "reusing the running environment in $dir"
  print_env
  exit 0
fi

"$here/install-deps.sh"
bin=$("$here/build-controlplane.sh")
((nodes == 0)) || node_bin=$("$here/build-node.sh")
crane=$("$here/build-tool.sh" crane)
started=$(date +%s)

# Whatever is left of an earlier environment goes first (only our own recorded pids).
"$here/down.sh" >/dev/null 2>&1 || true
"$here/nodes.sh" hub-up

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- certificates (kept across restarts; a leaf is made when missing) ----------------------------
pki=$dir/pki
mkdir -p "$pki"
if [[ ! -f $pki/ca.crt ]]; then
  log "generating certificates in $pki"
  rm -f "$pki"/*.crt "$pki"/*.key
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=edgefleet-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
fi
cert() { # name subject [san]: signed by the local CA unless it exists with this subject and SAN
  local name=$1 subj=$2 san=${3:-} ext
  if [[ -f $pki/$name.crt && -f $pki/$name.key && -f $pki/$name.id ]] && [[ $(cat "$pki/$name.id") == "$subj $san" ]]; then
    return 0
  fi
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  ext=$pki/$name.ext
  if [[ -n $san ]]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
  echo "$subj $san" >"$pki/$name.id"
}
cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:$HUB_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1"
cert admin "/O=system:masters/CN=edgefleet-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client"
cert kube-proxy "/CN=system:kube-proxy"
for ((i = 0; i < nodes; i++)); do
  cert "edge-$i" "/O=system:nodes/CN=system:node:edge-$i"
  cert "edge-$i-serving" "/CN=edge-$i" "IP:10.77.0.$((10 + i)),DNS:edge-$i"
done
if [[ ! -f $pki/sa.key ]]; then
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
      if [[ $what == */* ]]; then tail -n 20 "$dir/$what.log" >&2 || true; else tail -n 20 "$dir/logs/$what.log" >&2 || true; fi
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
# The last port again when it is free: kubeconfigs written by earlier runs keep working.
previous_port=$(cat "$dir/apiserver.port" 2>/dev/null || true)
if [[ -n $previous_port ]] && python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$previous_port" 2>/dev/null; then
  api_port=$previous_port
else
  api_port=$(free_port)
fi
echo "$api_port" >"$dir/apiserver.port"
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address "$HUB_IP" --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$SERVICE_RANGE" \
  --allow-privileged=true \
  --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
  --v 1
wait_for kube-apiserver 120 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://127.0.0.1:$api_port/readyz"

# Nodes and pods reach the API server at the advertised address: a forwarder in the hub (through
# a Unix socket, so the API server itself listens on loopback only).
start apiserver-socket socat "UNIX-LISTEN:$dir/apiserver.sock,fork,unlink-early" "TCP:127.0.0.1:$api_port"
wait_for apiserver-socket 10 test -S "$dir/apiserver.sock"
start apiserver-forwarder nsenter --net="/run/netns/$EDGEFLEET_HUB_NS" \
  socat "TCP-LISTEN:$api_port,bind=$HUB_IP,fork,reuseaddr" "UNIX-CONNECT:$dir/apiserver.sock"

kubeconfig "$dir/kubeconfig" admin "$api_port"
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager "$api_port"
kubeconfig "$dir/scheduler.kubeconfig" scheduler "$api_port"

# --- kube-controller-manager (garbage collector, Job controller, service-account tokens) -------
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service,-route,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ttl' \
  --v 1

# --- kube-scheduler (places pods on the nodes) ------------------------------------------------
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false --v 1

# --- registry (inside the hub: nodes, pods and the host reach it at the same address) ----------
registry=$HUB_IP:$HUB_REGISTRY_PORT
mkdir -p "$dir/registry"
cat >"$dir/registry.yml" <<REGISTRY
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/registry}
  delete: {enabled: true}
http:
  addr: $registry
REGISTRY
start registry nsenter --net="/run/netns/$EDGEFLEET_HUB_NS" docker-registry serve "$dir/registry.yml"
wait_for registry 30 curl -fsS "http://$registry/v2/"

# The controller-manager is ready once it created the default ServiceAccount.
wait_for kube-controller-manager 90 env KUBECONFIG="$dir/kubeconfig" kubectl get serviceaccount default -n default

# Pods reach the API server through the `kubernetes` Service; its endpoints name the port. The
# API server keeps an old port for the same address, so on a new port they are made anew.
if [[ -n $previous_port && $previous_port != "$api_port" ]]; then
  kubectl --kubeconfig "$dir/kubeconfig" delete endpoints kubernetes -n default --ignore-not-found >/dev/null
  kubectl --kubeconfig "$dir/kubeconfig" delete endpointslice kubernetes -n default --ignore-not-found >/dev/null
fi

# The API server reaches kubelets (logs, exec, port-forward) with its own client certificate.
kubectl --kubeconfig "$dir/kubeconfig" create clusterrolebinding edgefleet:apiserver-kubelet \
  --clusterrole system:kubelet-api-admin --user kube-apiserver-kubelet-client --dry-run=client -o yaml |
  kubectl --kubeconfig "$dir/kubeconfig" apply -f - >/dev/null

# --- nodes ------------------------------------------------------------------------------------
# Every node starts new (the old ones' processes are gone): its Node object too, so Ready below
# is the new kubelet's word and pods bound to an old node are collected.
kubectl --kubeconfig "$dir/kubeconfig" delete nodes -l edgefleet.dev/test-ground=true --wait=true >/dev/null
if ((nodes > 0)); then
  "$here/pause-image.sh" "$registry" >"$dir/pause.ref"
  for ((i = 0; i < nodes; i++)); do
    "$here/nodes.sh" start "$i" "$(node_arch "$i")"
  done
  for ((i = 0; i < nodes; i++)); do
    wait_for "nodes/edge-$i/logs/kubelet" 180 kubectl --kubeconfig "$dir/kubeconfig" wait --for=condition=Ready "node/edge-$i" --timeout=2s
  done
  log "$nodes nodes Ready: $(kubectl --kubeconfig "$dir/kubeconfig" get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.addresses[0].address} {end}')"
fi
echo "$nodes" >"$dir/nodes.count"

cat >"$dir/env.sh" <<ENV
export KUBECONFIG=$dir/kubeconfig
export EDGEFLEET_REGISTRY=$registry
ENV
log "environment ready in $(($(date +%s) - started))s (state in $dir)"
print_env
