#!/usr/bin/env bash
# Builds everything vessel needs, then runs a command inside a vessel micro-VM.
# Usage: scripts/demo.sh [CMD [ARGS...]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"  # progress goes to stderr; stdout is the guest's

if (($# == 0)); then
  set -- sh -c 'echo "Hello from $(uname -sr) in a vessel micro-VM: $(nproc) vCPUs, $(($(sed -n "s/MemTotal: *\([0-9]*\).*/\1/p" /proc/meminfo) / 1024)) MiB"'
fi
# On PVM hosts maybe-nested prints a one-line note and runs vessel in the level-1 VM.
exec "$root/tests/harness/maybe-nested" -- "$root/build/vessel" boot --cpus 2 --memory 256 -- "$@"
