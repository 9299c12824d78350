#!/usr/bin/env bash
# The test ground's network and its real nodes. `make up` / `make down` call this; tests call it
# to cut a node's link or restart a node's containerd or kubelet.
#
#   hack/nodes.sh hub-up | hub-down        the network every node joins (below)
#   hack/nodes.sh start I [arm64] | stop I node I: containerd, kubelet, kube-proxy; an arm64 node
#                                          runs the arm64 kubelet under qemu-user (docs/arm64.md)
#   hack/nodes.sh restart I containerd|kubelet|kube-proxy
#   hack/nodes.sh cut I | heal I           take node I's link down / up again
#   hack/nodes.sh down                     every node (then hub-down removes the network)
#
# The network lives in namespaces this script creates; the host itself only gains one veth end
# and routes to these private ranges, so nothing the test ground sends can leave the machine:
#
#   host (root ns)  ef-host 10.76.0.1 ──veth── 10.76.0.2 ef-root   hub ns "edgefleet-hub"
#     routes 10.77/16, 10.78/16 and the service range to the hub     bridge ef0 10.77.0.1/24:
#                                                                   the registry (:5000) and a
#                                                                   forwarder to the API server
#   node I (ns "edgefleet-edge-I")  eth0 10.77.0.(10+I) on ef0, default route via the hub;
#     pods 10.78.I.0/24 on its own CNI bridge (bridge + host-local), kube-proxy (iptables)
#
# The hub routes each node's pod range to that node and the service range to node 0, whose
# kube-proxy translates it (the API server reaches webhooks through their Service this way).
# Each node also has a mount namespace of its own (its containerd, kubelet and containers see
# private /run/containerd and /run/netns) and a cgroup subtree /edgefleet/edge-I in every
# hierarchy; stopping a node kills every process in that subtree, so nothing of it survives.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
dir=$EDGEFLEET_ENV_DIR

hub=$EDGEFLEET_HUB_NS
cgroups=/sys/fs/cgroup

node_name() { echo "edge-$1"; }
node_ns() { echo "edgefleet-edge-$1"; }
node_ip() { echo "10.77.0.$((10 + $1))"; }
node_pods() { echo "10.78.$1.0/24"; }
node_dir() { echo "$dir/nodes/edge-$1"; }

# --- network ----------------------------------------------------------------------------------
hub_up() {
  if ip netns list | grep -qw "$hub"; then
    return 0
  fi
  log "creating the network: namespace $hub, bridge ef0 $HUB_IP/24, veth ef-host $HOST_LINK_IP"
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add ef0 type bridge
  ip -n "$hub" addr add "$HUB_IP/24" dev ef0
  ip -n "$hub" link set ef0 up
  ip link add ef-host type veth peer name ef-root netns "$hub"
  ip addr add "$HOST_LINK_IP/30" dev ef-host
  ip link set ef-host up
  ip -n "$hub" addr add "$HUB_LINK_IP/30" dev ef-root
  ip -n "$hub" link set ef-root up
  ip netns exec "$hub" sysctl -qw net.ipv4.ip_forward=1
  for range in 10.77.0.0/16 10.78.0.0/16 "$SERVICE_RANGE"; do
    ip route replace "$range" via "$HUB_LINK_IP" dev ef-host
  done
  # Node 0 translates Service addresses for traffic that enters from the hub.
  ip -n "$hub" route replace "$SERVICE_RANGE" via "$(node_ip 0)"
}

hub_down() {
  ip link del ef-host 2>/dev/null || true # takes its routes with it
  if ip netns list | grep -qw "$hub"; then
    ip netns del "$hub"
    log "removed the network (namespace $hub)"
  fi
}

link_up() { # i
  local i=$1 ns
  ns=$(node_ns "$i")
  ip netns list | grep -qw "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip -n "$hub" link add "ef-n$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "ef-n$i" master ef0 up
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
  fi
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via "$HUB_IP"
  ip -n "$hub" route replace "$(node_pods "$i")" via "$(node_ip "$i")"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
}

# --- cgroups ----------------------------------------------------------------------------------
hierarchies() {
  local h
  for h in "$cgroups"/*/; do
    if [[ -f $h/cgroup.procs ]]; then echo "${h%/}"; fi
  done
}

cgroup_make() { # path (e.g. /edgefleet/edge-0/runtime)
  local path=$1 h part acc
  for h in $(hierarchies); do
    acc=""
    for part in ${path//\// }; do
      acc=$acc/$part
      if [[ ! -d $h$acc ]]; then
        mkdir "$h$acc"
        if [[ -f $h$acc/cpuset.cpus ]]; then
          cat "$(dirname "$h$acc")/cpuset.cpus" >"$h$acc/cpuset.cpus"
          cat "$(dirname "$h$acc")/cpuset.mems" >"$h$acc/cpuset.mems"
        fi
      fi
    done
  done
}

# Every pid in cgroup `path` and below, in any hierarchy.
cgroup_pids() {
  local path=$1 h
  for h in $(hierarchies); do
    if [[ -d $h$path ]]; then find "$h$path" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}

cgroup_kill() { # path
  local path=$1 pids
  for _ in $(seq 1 50); do
    pids=$(cgroup_pids "$path")
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  log "processes left in cgroup $path: $(cgroup_pids "$path" | tr '\n' ' ')"
}

cgroup_remove() { # path
  local path=$1 h
  for h in $(hierarchies); do
    if [[ -d $h$path ]]; then find "$h$path" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
}

# --- one node ---------------------------------------------------------------------------------
# Runs as the process `start` records: joins cgroup $2 of node $1, enters its namespaces and
# runs the command, again a second after it exits (as systemd's Restart=always would).
exec_in() { # i cgroup cmd...
  local i=$1 group=$2 h
  shift 2
  for h in $(hierarchies); do
    echo $$ >"$h/edgefleet/$(node_name "$i")/$group/cgroup.procs"
  done
  exec nsenter --net="/run/netns/$(node_ns "$i")" --mount="$(node_dir "$i")/mnt" -- \
    bash -c 'while :; do "$@"; echo "[edgefleet] $1 exited with status $?; starting it again in 1s" >&2; sleep 1; done' supervise "$@"
}

ttl=${EDGEFLEET_ENV_TTL:-8h}
spawn() { # i name cmd...  (a node process under `timeout`, its pid in the node's directory)
  local i=$1 name=$2 nd
  shift 2
  nd=$(node_dir "$i")
  cgroup_make "/edgefleet/$(node_name "$i")/$name"
  setsid timeout --signal=TERM "$ttl" bash "$here/nodes.sh" exec-in "$i" "$name" "$@" \
    >>"$nd/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo "$!" >"$nd/$name.pid"
}

stop_process() { # i name
  local pidfile pid
  pidfile=$(node_dir "$1")/$2.pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^timeout "; then
    kill -TERM -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  # Whatever it left in its cgroup (containerd's shims live in the runtime's) stays: containers
  # keep running when containerd or the kubelet restarts, as on a real node.
  for _ in $(seq 1 50); do
    running "$pid" || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

# A live process (a zombie waiting for init to reap it is not).
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

process_cmd() { # i name
  local i=$1 nd
  nd=$(node_dir "$i")
  case $2 in
    containerd) echo containerd --config "$nd/containerd.toml" ;;
    kubelet)
      local kubelet="$node_bin/kubelet"
      [[ $(node_arch "$i") == arm64 ]] && kubelet="qemu-aarch64-static -E GODEBUG=asyncpreemptoff=1 $node_bin/kubelet-arm64"
      echo "$kubelet" --config "$nd/kubelet.yaml" --kubeconfig "$nd/kubelet.kubeconfig" \
        --root-dir "$nd/kubelet" --hostname-override "$(node_name "$i")" --node-ip "$(node_ip "$i")" \
        --node-labels "$(node_labels "$i")" --v 1
      ;;
    kube-proxy) echo "$node_bin/kube-proxy" --config "$nd/kube-proxy.yaml" --v 1 ;;
  esac
}

node_labels() { # i
  local class=cpu-int8
  # An emulated arm64 node's containerd is amd64 and would pick an image index's amd64 entry, so
  # its pods carry a class of that one architecture, whose sidecar image is the arm64 manifest.
  [[ $(node_arch "$1") == arm64 ]] && class=cpu-int8-arm64
  echo "edgefleet.dev/device-class=$class,edgefleet.dev/test-ground=true"
}

# amd64, or arm64 for a node started as one (recorded, so that restarts keep it).
node_arch() { # i
  cat "$(node_dir "$1")/arch" 2>/dev/null || echo amd64
}

start_process() { # i name
  # shellcheck disable=SC2046
  spawn "$1" "$2" $(process_cmd "$1" "$2")
}

write_configs() { # i
  local i=$1 nd name ip
  nd=$(node_dir "$i")
  name=$(node_name "$i")
  ip=$(node_ip "$i")
  mkdir -p "$nd/logs" "$nd/kubelet" "$nd/pod-logs" "$nd/cni/net.d" "$nd/cni/ipam" "$nd/containerd" \
    "$nd/certs.d/$HUB_IP:$HUB_REGISTRY_PORT"
  : >"$nd/resolv.conf" # pods resolve nothing: every address they use is an IP of the test ground
  cat >"$nd/certs.d/$HUB_IP:$HUB_REGISTRY_PORT/hosts.toml" <<TOML
server = "http://$HUB_IP:$HUB_REGISTRY_PORT"
[host."http://$HUB_IP:$HUB_REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
TOML
  cat >"$nd/cni/net.d/10-edgefleet.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "edgefleet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$nd/cni/ipam",
              "ranges": [[{"subnet": "$(node_pods "$i")"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat >"$nd/containerd.toml" <<TOML
version = 2
root = "$nd/containerd/root"
state = "/run/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$nd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$nd/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(cat "$dir/pause.ref")"
  # This VM's processes lack CAP_SYS_RESOURCE: never ask for a lower OOM score than our own.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$nd/certs.d"
TOML
  cat >"$nd/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $dir/pki/$name-serving.crt
tlsPrivateKeyFile: $dir/pki/$name-serving.key
containerRuntimeEndpoint: unix://$nd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /edgefleet/$name
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
failCgroupV1: false
resolvConf: $nd/resolv.conf
# No cluster DNS runs here: pods get the hub's address, where nothing answers on port 53, so a
# lookup fails at once (every address the test ground uses is an IP) and no pod is warned.
clusterDNS: [$HUB_IP]
clusterDomain: cluster.local
podLogsDir: $nd/pod-logs
maxPods: 60
serializeImagePulls: false
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
YAML
  kubeconfig "$nd/kubelet.kubeconfig" "$name" "https://$HUB_IP:$(cat "$dir/apiserver.port")"
  kubeconfig "$nd/kube-proxy.kubeconfig" kube-proxy "https://$HUB_IP:$(cat "$dir/apiserver.port")"
  cat >"$nd/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $nd/kube-proxy.kubeconfig}
hostnameOverride: $name
bindAddress: $ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: 10.78.0.0/16
mode: iptables
# Every Service connection is masqueraded, so replies always pass back through the translating
# node (the API server's calls to webhooks enter at node 0 and may end on another node).
iptables: {masqueradeAll: true}
# Leave the host-wide conntrack settings alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

kubeconfig() { # file user server
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: edgefleet-local
  cluster: {server: "$3", certificate-authority: $dir/pki/ca.crt}
users:
- name: $2
  user: {client-certificate: $dir/pki/$2.crt, client-key: $dir/pki/$2.key}
contexts:
- name: edgefleet-local
  context: {cluster: edgefleet-local, user: $2}
current-context: edgefleet-local
KUBECONFIG
}

# A private mount namespace for the node, kept alive by a bind mount on $nd/mnt, with its own
# /run/containerd and /run/netns (containerd and CNI write there by fixed paths) and its own
# empty /etc/resolv.conf: nothing on a node resolves names through the host's resolver.
mount_ns() { # i
  local nd
  nd=$(node_dir "$1")
  mountpoint -q "$nd/mnt" 2>/dev/null && return 0
  mkdir -p /run/containerd /run/netns
  touch "$nd/mnt"
  unshare --mount="$nd/mnt" --propagation private sh -c "
    mount -t tmpfs -o mode=0711 edgefleet-node /run/containerd &&
    mount -t tmpfs -o mode=0755 edgefleet-node /run/netns &&
    mount --bind '$nd/resolv.conf' /etc/resolv.conf"
}

start_node() { # i [arch]
  local i=$1 arch=${2:-amd64} name
  name=$(node_name "$i")
  node_bin=$(node_bin_dir)
  [[ $arch == amd64 || $arch == arm64 ]] || die "a node is amd64 or arm64, not '$arch'"
  stop_node "$i" quiet
  mkdir -p "$(node_dir "$i")/logs"
  echo "$arch" >"$(node_dir "$i")/arch"
  if [[ $arch == arm64 ]]; then
    bash "$here/cross.sh" --binfmt # installs qemu-user-static on first use
    bash "$here/build-node.sh" arm64-kubelet >/dev/null
  fi
  link_up "$i"
  write_configs "$i"
  mount_ns "$i"
  cgroup_make "/edgefleet/$name"
  start_process "$i" containerd
  # The kubelet checks the runtime once at start.
  for _ in $(seq 1 100); do
    [[ -S $(node_dir "$i")/containerd.sock ]] && break
    sleep 0.1
  done
  start_process "$i" kubelet
  start_process "$i" kube-proxy
  log "started node $name ($(node_ip "$i"), pods $(node_pods "$i"); logs in $(node_dir "$i")/logs)"
}

stop_node() { # i [quiet]
  local i=$1 nd name
  nd=$(node_dir "$i")
  name=$(node_name "$i")
  for p in kube-proxy kubelet containerd; do
    stop_process "$i" "$p"
  done
  cgroup_kill "/edgefleet/$name"
  cgroup_remove "/edgefleet/$name"
  if mountpoint -q "$nd/mnt" 2>/dev/null; then
    umount "$nd/mnt"
  fi
  if ip netns list | grep -qw "$(node_ns "$i")"; then
    ip netns del "$(node_ns "$i")"
  fi
  ip -n "$hub" link del "ef-n$i" 2>/dev/null || true
  [[ ${2:-} == quiet ]] || log "stopped node $name"
}

known_nodes() {
  local d
  for d in "$dir"/nodes/edge-*; do
    if [[ -d $d ]]; then echo "${d##*/edge-}"; fi
  done | sort -n
}

cmd=${1:?usage: nodes.sh hub-up|hub-down|start I|stop I|restart I PROCESS|cut I|heal I|down}
case $cmd in
  hub-up) hub_up ;;
  hub-down) hub_down ;;
  start) hub_up; start_node "${2:?node index}" "${3:-$(node_arch "${2:?node index}")}" ;;
  stop) stop_node "${2:?node index}" ;;
  restart)
    node_bin=$(node_bin_dir)
    stop_process "${2:?node index}" "${3:?process}"
    start_process "$2" "$3"
    log "restarted $3 on $(node_name "$2")"
    ;;
  cut) ip -n "$(node_ns "${2:?node index}")" link set eth0 down; log "cut the link of $(node_name "$2")" ;;
  heal) link_up "${2:?node index}"; log "restored the link of $(node_name "$2")" ;;
  down) # every node; the network goes with hub-down, after the processes inside it
    for i in $(known_nodes); do stop_node "$i"; done
    cgroup_remove /edgefleet
    ;;
  exec-in) shift; exec_in "$@" ;;
  *) die "unknown command: $cmd" ;;
esac
