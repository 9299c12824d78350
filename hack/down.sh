#!/usr/bin/env bash
# Stops the processes `make up` started, by their recorded pids, and nothing else.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$EDGEFLEET_ENV_DIR
[[ -f $dir/pids ]] || { log "no environment recorded in $dir"; exit 0; }

pids=()
while read -r name pid; do
  # Only signal a pid that is still the `timeout` wrapper we started (pids get reused).
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^timeout "; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && log "stopping $name (pid $pid)"
  fi
done < <(tac "$dir/pids")

for _ in $(seq 1 50); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  ((alive)) || break
  sleep 0.2
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
rm -f "$dir/pids" "$dir/env.sh"
