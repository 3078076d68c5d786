#!/usr/bin/env bash
# Container checkpoint and restore (docs/runtime.md, "Checkpoint and restore"): how long
# `vessel checkpoint` and `vessel restore --image-path` take and how big the checkpoint is,
# for a busybox counter container with 256 MiB and 1 GiB of guest memory; the same through
# `podman container checkpoint/restore`, with runc (CRIU) as the peer when CRIU works here;
# and, for scale, a cold `create`+`start` of the same container. Prints medians of N runs.
# Usage (on a PVM host via the harness, as root):
#   tests/harness/maybe-nested -- benchmarks/checkpoint_bench.sh
# VESSEL_BIN (default build/vessel), BENCH_RUNS (default 5).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vessel=$(realpath "${VESSEL_BIN:-$root/build/vessel}")
runs=${BENCH_RUNS:-5}
[[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 77; }
[[ -e /dev/kvm ]] || { echo "no /dev/kvm" >&2; exit 77; }
work=$(mktemp -d /var/tmp/vessel-ckbench.XXXXXX)
state=$work/state
v() { "$vessel" --root "$state" "$@"; }
store=(--root /var/lib/containers/vessel-ckbench --runroot /run/vessel-ckbench)
pm() { podman "${store[@]}" --cgroup-manager cgroupfs --events-backend file "$@"; }
cleanup() {
    for id in $(v list -q 2>/dev/null); do v delete --force "$id" >/dev/null 2>&1; done
    pm rm -af -t 0 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

rootfs=$work/rootfs
mkdir -p "$rootfs/bin"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for t in sh sleep echo; do ln -sf busybox "$rootfs/bin/$t"; done
counter='i=0; while :; do i=$((i + 1)); echo $i; sleep 0.2; done'
bundle() {  # dir, memory bytes
    mkdir -p "$1"
    ln -sfn "$rootfs" "$1/rootfs"
    (cd "$1" && runc spec && python3 - "$2" "$counter" <<'PY'
import json, sys
c = json.load(open('config.json'))
c['process']['terminal'] = False
c['process']['args'] = ['sh', '-c', sys.argv[2]]
c['root']['readonly'] = False
c['linux']['resources'] = {'memory': {'limit': int(sys.argv[1])}}
json.dump(c, open('config.json', 'w'))
PY
    )
}
now() { date +%s%N; }
ms_since() { echo $((($(now) - $1) / 1000000)); }
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
wait_count() {  # file, at least
    for _ in $(seq 300); do [[ $(tail -1 "$1" 2>/dev/null) -ge $2 ]] 2>/dev/null && return 0; sleep 0.05; done
    return 1
}

for mem in 268435456 1073741824; do
    name=$((mem >> 20))m
    bundle "$work/b$name" "$mem"
    : >"$work/$name.create" >"$work/$name.ck" >"$work/$name.rs" >"$work/$name.size"
    for r in $(seq "$runs"); do
        id=c$name-$r
        t0=$(now)
        VESSEL_WARM_START=0 v create -b "$work/b$name" "$id" </dev/null >"$work/out" 2>/dev/null
        v start "$id"
        wait_count "$work/out" 1
        ms_since "$t0" >>"$work/$name.create"
        wait_count "$work/out" 3
        t0=$(now)
        v checkpoint --image-path "$work/ck-$id" "$id"
        ms_since "$t0" >>"$work/$name.ck"
        echo $(($(du -sk "$work/ck-$id" | cut -f1) / 1024)) >>"$work/$name.size"
        last=$(tail -1 "$work/out")
        t0=$(now)
        v restore --image-path "$work/ck-$id" -b "$work/b$name" -d "$id" </dev/null >"$work/out2" 2>/dev/null
        wait_count "$work/out2" $((last + 1))
        ms_since "$t0" >>"$work/$name.rs"
        v delete --force "$id"
        rm -rf "$work/ck-$id"
    done
    printf '%-44s %6s ms\n' "vessel create+start, cold ($name)" "$(median <"$work/$name.create")"
    printf '%-44s %6s ms  (%s MiB on disk)\n' "vessel checkpoint ($name)" "$(median <"$work/$name.ck")" "$(median <"$work/$name.size")"
    printf '%-44s %6s ms\n' "vessel restore to next output ($name)" "$(median <"$work/$name.rs")"
done

tar -C "$rootfs" -c . | pm import - localhost/busybox:ckbench >/dev/null
for rt in "$vessel" "$(command -v runc)"; do
    n=$(basename "$rt")
    : >"$work/pm.ck" >"$work/pm.rs"
    ok=1
    for r in $(seq "$runs"); do
        cid=$(pm --runtime "$rt" run -d localhost/busybox:ckbench sh -c "$counter")
        for _ in $(seq 100); do [[ $(pm logs "$cid" 2>/dev/null | tail -1) -ge 3 ]] 2>/dev/null && break; sleep 0.1; done
        t0=$(now)
        if ! pm container checkpoint "$cid" >/dev/null 2>"$work/err"; then
            echo "podman + $n: checkpoint failed: $(tail -1 "$work/err")"
            ok=0
            pm rm -f -t 0 "$cid" >/dev/null
            break
        fi
        ms_since "$t0" >>"$work/pm.ck"
        t0=$(now)
        pm container restore "$cid" >/dev/null
        ms_since "$t0" >>"$work/pm.rs"
        pm rm -f -t 0 "$cid" >/dev/null
    done
    [[ $ok == 1 ]] || continue
    printf '%-44s %6s ms\n' "podman container checkpoint ($n)" "$(median <"$work/pm.ck")"
    printf '%-44s %6s ms\n' "podman container restore ($n)" "$(median <"$work/pm.rs")"
done
