#!/usr/bin/env bash
# Stops the processes `make up` started, by their recorded pids, and nothing else: first the
# nodes (every process in their cgroups, their mount and network namespaces), then the control
# plane and registry, then the network (hack/nodes.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$EDGEFLEET_ENV_DIR
"$(dirname "$0")/nodes.sh" down
[[ -f $dir/pids ]] || { log "no environment recorded in $dir"; "$(dirname "$0")/nodes.sh" hub-down; exit 0; }

# Each process was started by `setsid timeout ...`, so its pid is also its process group: signal
# the group, which reaches the server itself even if `timeout` is gone.
groups=()
while read -r name pid; do
  # Only signal a pid that is still the `timeout` wrapper we started (pids get reused).
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^timeout "; then
    kill -TERM -- "-$pid" 2>/dev/null && groups+=("$pid") && log "stopping $name (pid $pid)"
  fi
done < <(tac "$dir/pids")

# A group is alive while a member is not a zombie (this VM's init may reap them late).
alive() {
  local p
  for p in $(pgrep -g "$1" 2>/dev/null); do
    [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] && [[ -e /proc/$p ]] && return 0
  done
  return 1
}
for _ in $(seq 1 50); do
  any=0
  for g in "${groups[@]}"; do alive "$g" && any=1; done
  ((any)) || break
  sleep 0.2
done
for g in "${groups[@]}"; do
  if alive "$g"; then
    log "process group $g did not stop within 10s; killing it"
    kill -KILL -- "-$g" 2>/dev/null || true
  fi
done
"$(dirname "$0")/nodes.sh" hub-down
rm -f "$dir/pids" "$dir/env.sh" "$dir/nodes.count"
