#!/usr/bin/env bash
# make bench-nodes: what the test ground's real nodes cost. Measures, on this machine:
#   - the node binaries' build (kubelet, kube-proxy, pause) once the control plane is built
#     (its Go build cache warm), and from an empty Go build cache (BENCH_COLD=0 skips that one);
#   - `make up` from nothing running, with NODES=3 and with NODES=0 (the peer: control plane and
#     registry only), binaries cached;
#   - per node, the resident memory of kubelet, containerd and kube-proxy (every process in
#     their cgroups) after the nodes idled for 30 s with nothing scheduled;
#   - pod created → its sidecar serving the model, image cold and cached (benches/nodes.rs, the
#     release images of `make images`).
# Writes bench-results/nodes.json and prints it as the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source hack/lib.sh
mkdir -p bench-results
dir=$EDGEFLEET_ENV_DIR
now() { date +%s.%N; }
since() { python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 1))" "$1"; }

bash hack/build-controlplane.sh >/dev/null
bin=$(node_bin_dir)
rm -rf "$bin"
t=$(now); bash hack/build-node.sh >/dev/null; node_build_warm=$(since "$t")
log "node binaries, control plane's Go cache warm: ${node_build_warm}s"
node_build_cold=null
if [[ ${BENCH_COLD:-1} == 1 ]]; then
  cache=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-gocache.XXXXXX")
  rm -rf "$bin"
  t=$(now); GOCACHE=$cache bash hack/build-node.sh >/dev/null; node_build_cold=$(since "$t")
  rm -rf "$cache"
  log "node binaries, empty Go build cache: ${node_build_cold}s"
fi

bash hack/down.sh >/dev/null 2>&1
t=$(now); NODES=0 bash hack/up.sh >/dev/null; up_0=$(since "$t")
bash hack/down.sh >/dev/null 2>&1
t=$(now); NODES=3 ARM64_NODES=0 bash hack/up.sh >/dev/null; up_3=$(since "$t")
log "make up: ${up_0}s without nodes, ${up_3}s with 3"

sleep 30
# The resident memory of every process in a node's cgroup for one of its programs (containerd's
# shims live in its cgroup; the supervising shell is counted too), in MiB.
rss() { # node process
  local total=0 p
  for p in $(cat /sys/fs/cgroup/pids/edgefleet/"$1"/"$2"/cgroup.procs 2>/dev/null); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  python3 -c "print(round($total / 1024, 1))"
}
memory=()
for i in 0 1 2; do
  kubelet=$(rss "edge-$i" kubelet)
  containerd=$(rss "edge-$i" containerd)
  proxy=$(rss "edge-$i" kube-proxy)
  memory+=("{\"node\": \"edge-$i\", \"kubelet_mib\": $kubelet, \"containerd_mib\": $containerd, \"kube_proxy_mib\": $proxy}")
  log "edge-$i: kubelet ${kubelet} MiB, containerd ${containerd} MiB (with its shims), kube-proxy ${proxy} MiB"
done

pods=$(EDGEFLEET_IMAGE_PROFILE=release cargo bench -q --bench nodes 2>/dev/null | tail -1)
json=$(python3 - "$node_build_warm" "$node_build_cold" "$up_0" "$up_3" "[$(IFS=,; echo "${memory[*]}")]" "$pods" <<'PY'
import json, sys
warm, cold, up0, up3, memory, pods = sys.argv[1:]
memory = json.loads(memory)
print(json.dumps({
    "machine": "2 cores x86_64, 24 GiB",
    "node_binaries_build_s": {"control_plane_cache_warm": float(warm), "go_cache_empty": None if cold == "null" else float(cold)},
    "make_up_s": {"nodes_0": float(up0), "nodes_3": float(up3)},
    "per_node_idle_rss_mib": memory,
    "per_node_idle_rss_mib_mean": round(sum(m["kubelet_mib"] + m["containerd_mib"] + m["kube_proxy_mib"] for m in memory) / len(memory), 1),
    "pods": json.loads(pods),
}))
PY
)
echo "$json" >bench-results/nodes.json
echo "$json"
