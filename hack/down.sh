#!/usr/bin/env bash
# Stops the processes `make up` started, by their recorded pids, and nothing else.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$EDGEFLEET_ENV_DIR
[[ -f $dir/pids ]] || { log "no environment recorded in $dir"; exit 0; }

# Each process was started by `setsid timeout ...`, so its pid is also its process group: signal
# the group, which reaches the server itself even if `timeout` is gone.
groups=()
while read -r name pid; do
  # Only signal a pid that is still the `timeout` wrapper we started (pids get reused).
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^timeout "; then
    kill -TERM -- "-$pid" 2>/dev/null && groups+=("$pid") && log "stopping $name (pid $pid)"
  fi
done < <(tac "$dir/pids")

alive() { pgrep -g "$1" >/dev/null 2>&1; }
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
rm -f "$dir/pids" "$dir/env.sh"
