#!/usr/bin/env bash
# Container start-to-exit latency: `podman run --rm IMG true` with vessel, runc and crun as
# the runtime, vessel's own `run` of the same rootfs without podman, and (when Debian's
# docker.io is installed) `docker run --rm IMG true` with vessel and runc through a private
# dockerd + containerd (tests/e2e/docker/daemons.sh), all in the same environment. Prints the
# median of N runs per case and its ratio to runc (podman's runc for podman and vessel run,
# Docker's runc for the Docker cases). vessel's default is warm start (the container's VM
# restored from a template snapshot instead of booted; the warm-up run makes the template):
# the podman and Docker vessel cases use it, "podman + vessel, cold" and "vessel run" boot
# (VESSEL_WARM_START=0), "vessel run, warm start" restores.
# Usage (on a PVM host via the harness, as root):
#   tests/harness/maybe-nested -- benchmarks/oci_bench.sh
# VESSEL_BIN (default build/vessel), BENCH_RUNS (default 5).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vessel=$(realpath "${VESSEL_BIN:-$root/build/vessel}")
runs=${BENCH_RUNS:-5}
[[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 77; }
[[ -e /dev/kvm ]] || { echo "no /dev/kvm" >&2; exit 77; }
work=$(mktemp -d /var/tmp/vessel-ocibench.XXXXXX)
with_docker=0
if command -v dockerd >/dev/null && command -v containerd >/dev/null; then
    with_docker=1
    # shellcheck source=tests/e2e/docker/daemons.sh
    . "$root/tests/e2e/docker/daemons.sh"
fi
trap '[[ $with_docker == 1 ]] && dk_stop; rm -rf "$work"' EXIT

rootfs=$work/bundle/rootfs
mkdir -p "$rootfs/bin"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for t in sh true; do ln -sf busybox "$rootfs/bin/$t"; done
(cd "$work/bundle" && runc spec && python3 -c '
import json; c = json.load(open("config.json"))
c["process"]["terminal"] = False; c["process"]["args"] = ["true"]
json.dump(c, open("config.json", "w"))')
# Storage on tmpfs: in the harness /var/tmp is overlayfs, which podman's overlay driver refuses.
store=(--root /var/lib/containers/vessel-bench --runroot /run/vessel-bench)
pm() { podman "${store[@]}" --cgroup-manager cgroupfs --events-backend file "$@"; }
tar -C "$rootfs" -c . | pm import - localhost/busybox:bench >/dev/null

now() { date +%s%N; }
median_ms() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
measure() {  # name, command...
    local name=$1 t0 t1
    shift
    "$@" >/dev/null 2>&1 || { echo "$name: command failed: $*" >&2; return 1; }  # warm-up
    for _ in $(seq "$runs"); do
        t0=$(now)
        "$@" >/dev/null 2>&1
        t1=$(now)
        echo $(((t1 - t0) / 1000000))
    done | median_ms > "$work/$name.ms"
}
measure runc pm --runtime "$(command -v runc)" run --rm localhost/busybox:bench true
measure crun pm --runtime "$(command -v crun)" run --rm localhost/busybox:bench true
measure vessel pm --runtime "$vessel" run --rm localhost/busybox:bench true
# conmon does not pass its environment on: a wrapper turns warm start off.
printf '#!/bin/sh\nVESSEL_WARM_START=0 exec %s "$@"\n' "$vessel" >"$work/vessel-cold"
chmod +x "$work/vessel-cold"
measure vessel-cold pm --runtime "$work/vessel-cold" run --rm localhost/busybox:bench true
measure vessel-run env VESSEL_WARM_START=0 \
    sh -c "'$vessel' --root '$work/state' run -b '$work/bundle' bench\$\$"
measure vessel-run-warm env VESSEL_WARM_START=1 VESSEL_TEMPLATE_DIR="$work/templates" \
    sh -c "'$vessel' --root '$work/state' run -b '$work/bundle' bench\$\$"
cases="runc crun vessel vessel-cold vessel-run vessel-run-warm"
if [[ $with_docker == 1 ]]; then
    dk_start "$vessel" "$work/dk"
    tar -C "$rootfs" -c . | dk import - busybox:bench >/dev/null
    measure docker-runc dk run --rm --runtime runc busybox:bench true
    measure docker-vessel dk run --rm --runtime vessel busybox:bench true
    cases="$cases docker-runc docker-vessel"
fi

printf '%-28s %10s %10s\n' "case ($runs runs, median)" "ms" "vs runc"
for c in $cases; do
    ms=$(cat "$work/$c.ms")
    base=$(cat "$work/runc.ms")
    [[ $c == docker-* ]] && base=$(cat "$work/docker-runc.ms")
    label=$c
    [[ $c == vessel ]] && label="podman + vessel (warm)"
    [[ $c == vessel-cold ]] && label="podman + vessel, cold"
    [[ $c == runc || $c == crun ]] && label="podman + $c"
    [[ $c == vessel-run ]] && label="vessel run, cold (no podman)"
    [[ $c == vessel-run-warm ]] && label="vessel run, warm start"
    [[ $c == docker-* ]] && label="docker + ${c#docker-}"
    printf '%-28s %10s %10s\n' "$label" "$ms" "$(awk -v a="$ms" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')"
done
