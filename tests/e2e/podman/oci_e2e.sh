#!/bin/bash
# End-to-end test of vessel's runc-compatible CLI: the OCI lifecycle against a busybox
# bundle, then podman with --runtime vessel, each podman check run with runc too so that a
# behavioural difference shows up as a failure. Needs root and a KVM that boots Linux: run
# it through tests/harness/maybe-nested (exit 77 = skipped).
set -u
vessel=$(realpath "${1:?usage: oci_e2e.sh VESSEL_BIN}")
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root"; exit 77; }
[[ -e /dev/kvm ]] || { echo "SKIP: no /dev/kvm"; exit 77; }
work=$(mktemp -d /var/tmp/vessel-oci-e2e.XXXXXX)
root=$work/state
pass=0 fail=0
cleanup() {
    for id in $("$vessel" --root "$root" list -q 2>/dev/null); do
        "$vessel" --root "$root" delete --force "$id" >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
check() {  # name, expected, actual
    if [[ $2 == "$3" ]]; then ok "$1"; else bad "$1" "got '$3', want '$2'"; fi
}
v() { "$vessel" --root "$root" "$@"; }
# A zombie VMM (its parent, create, is gone and init reaps late) counts as dead.
alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)
    [[ -n $st && $st != Z ]]
}

# A busybox-static rootfs and a bundle made by `runc spec`.
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for t in sh echo cat ls sleep true false grep head ip hostname id kill ps wc awk cut sed; do
    ln -sf busybox "$rootfs/bin/$t"
done
mkbundle() {  # dir, python snippet editing config c
    mkdir -p "$1"
    ln -sfn "$rootfs" "$1/rootfs"
    (cd "$1" && runc spec && python3 - "$2" <<'PY'
import json, sys
c = json.load(open('config.json'))
c['process']['terminal'] = False
exec(sys.argv[1])
json.dump(c, open('config.json', 'w'), indent=1)
PY
    )
}

echo "== vessel OCI lifecycle"
mkbundle "$work/b1" "c['process']['args'] = ['sh', '-c', 'echo out; echo err >&2; exit 3']"
out=$(v run -b "$work/b1" r1 2>"$work/err"); rc=$?
check run-status 3 "$rc"
check run-stdout out "$out"
check run-stderr err "$(cat "$work/err")"
check run-leaves-nothing "" "$(v list -q)"

mkbundle "$work/b2" "c['process']['args'] = ['sh', '-c', 'trap \"echo got TERM; exit 7\" TERM; echo started; while :; do sleep 0.1; done']"
v create -b "$work/b2" --pid-file "$work/pid" c2 </dev/null >"$work/c2.out" 2>"$work/c2.err"
check create-status 0 "$?"
pid=$(cat "$work/pid")
check state-created created "$(v state c2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
check state-pid "$pid" "$(v state c2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')"
check list-json c2 "$(v list --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
v create -b "$work/b2" c2 2>"$work/err"
check create-duplicate "1:already exists" "$?:$(grep -o 'already exists' "$work/err")"
v start c2; check start 0 "$?"
check state-running running "$(v state c2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
for _ in $(seq 100); do grep -q started "$work/c2.out" && break; sleep 0.1; done
v delete c2 2>"$work/err"
check delete-running-refused "1" "$?"
grep -q "that is not stopped: running" "$work/err" && ok delete-running-message || bad delete-running-message "$(cat "$work/err")"
v pause c2; check pause 0 "$?"
check state-paused paused "$(v state c2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
v resume c2; check resume 0 "$?"
v events --stats c2 | grep -q '"type":"stats"' && ok events-stats || bad events-stats "no stats"
check ps-json "[$pid]" "$(v ps --format json c2)"
check exec "hi from exec" "$(v exec c2 echo hi from exec)"
v exec c2 sh -c 'exit 5'; check exec-status 5 "$?"
v kill c2 TERM; check kill 0 "$?"
for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
check kill-handled "started got TERM" "$(tr '\n' ' ' <"$work/c2.out" | sed 's/ $//')"
check state-stopped stopped "$(v state c2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
v kill c2 KILL 2>"$work/err"; rc=$?
check kill-stopped "1:container not running" "$rc:$(sed 's/^vessel: //' "$work/err")"
v delete c2; check delete-stopped 0 "$?"
v delete c2 2>/dev/null; check delete-missing 1 "$?"
v delete --force c2; check delete-force-missing 0 "$?"

mkbundle "$work/b3" "c['process']['args'] = ['sleep', '1000']"
v create -b "$work/b3" c3 </dev/null >/dev/null 2>&1
pid=$(v state c3 | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
v start c3
v delete --force c3; check delete-force 0 "$?"
alive "$pid" && bad delete-force-kills-vmm "VMM $pid alive" || ok delete-force-kills-vmm
check delete-force-removes-state "" "$(ls "$root")"

mkbundle "$work/b4" "c['process']['args'] = ['sh', '-c', 'grep MemTotal /proc/meminfo; nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo']; c['linux']['resources'] = {'memory': {'limit': 268435456}}"
mem=$(v run -b "$work/b4" r4 | awk '/MemTotal/ {print $2}')
if [[ -n $mem && $mem -gt 200000 && $mem -le 262144 ]]; then ok memory-limit; else bad memory-limit "MemTotal '$mem' kB"; fi

mkbundle "$work/b5" "c['process']['args'] = ['true']; c['hooks'] = {'createRuntime': [{'path': '/bin/sh', 'args': ['sh', '-c', 'cat > $work/hook.state']}], 'poststop': [{'path': '/bin/sh', 'args': ['sh', '-c', 'touch $work/poststop']}]}"
v run -b "$work/b5" r5 >/dev/null
grep -q '"id":"r5"' "$work/hook.state" 2>/dev/null && ok hook-state-stdin || bad hook-state-stdin "$(cat "$work/hook.state" 2>&1)"
[[ -e $work/poststop ]] && ok hook-poststop || bad hook-poststop "not run"

echo "pass=$pass fail=$fail (lifecycle)"
[[ ${VESSEL_OCI_E2E_SKIP_PODMAN:-} == 1 ]] && { [[ $fail == 0 ]]; exit; }

echo "== podman (vessel vs runc)"
if ! command -v podman >/dev/null; then echo "SKIP podman: not installed"; [[ $fail == 0 ]]; exit; fi
pm() {
    podman --root /var/lib/containers/vessel-e2e --runroot /run/vessel-e2e --cgroup-manager cgroupfs \
        --events-backend file "$@"
}
tar -C "$rootfs" -c . | pm import - localhost/busybox:e2e >/dev/null || { bad podman-import "failed"; exit 1; }
for rt in runc "$vessel"; do
    n=$(basename "$rt")
    r=(--runtime "$rt")
    check "podman[$n] run echo" hi "$(pm "${r[@]}" run --rm localhost/busybox:e2e echo hi 2>&1)"
    pm "${r[@]}" run --rm localhost/busybox:e2e sh -c 'exit 42'
    check "podman[$n] exit 42" 42 "$?"
    out=$(pm "${r[@]}" run --rm localhost/busybox:e2e sh -c 'echo o; echo e >&2' 2>"$work/err")
    check "podman[$n] stdout" o "$out"
    check "podman[$n] stderr" e "$(cat "$work/err")"
    cid=$(pm "${r[@]}" run -d localhost/busybox:e2e sh -c 'trap "exit 0" TERM; while :; do sleep 0.1; done')
    check "podman[$n] run -d" 0 "$?"
    check "podman[$n] ps" running "$(pm inspect -f '{{.State.Status}}' "$cid" 2>&1)"
    check "podman[$n] exec" hello "$(pm exec "$cid" echo hello 2>&1)"
    pm exec "$cid" sh -c 'exit 4'; check "podman[$n] exec status" 4 "$?"
    pm stop -t 5 "$cid" >/dev/null; check "podman[$n] stop" 0 "$?"
    check "podman[$n] stopped exit code" 0 "$(pm inspect -f '{{.State.ExitCode}}' "$cid")"
    pm rm "$cid" >/dev/null
    cid=$(pm "${r[@]}" run -d localhost/busybox:e2e sleep 1000)
    pm kill "$cid" >/dev/null; check "podman[$n] kill" 0 "$?"
    pm wait "$cid" >/dev/null
    check "podman[$n] killed exit code" 137 "$(pm inspect -f '{{.State.ExitCode}}' "$cid")"
    pm rm -f "$cid" >/dev/null; check "podman[$n] rm" 0 "$?"
    cid=$(pm "${r[@]}" run -d localhost/busybox:e2e sleep 1000)
    pm rm -f -t 2 "$cid" >/dev/null; check "podman[$n] rm -f running" 0 "$?"
    check "podman[$n] nothing left" "" "$(pm ps -aq)"
    # -t: the pty's master goes to conmon through --console-socket.
    out=$(pm "${r[@]}" run --rm -t localhost/busybox:e2e sh -c 'test -t 0 && echo tty' 2>&1 | tr -d '\r')
    check "podman[$n] run -t" tty "$out"
    mem=$(pm "${r[@]}" run --rm --memory 256m localhost/busybox:e2e sh -c 'if [ -e /sys/fs/cgroup/memory.max ]; then echo $(($(cat /sys/fs/cgroup/memory.max) / 1024)); else awk "/MemTotal/ {print \$2}" /proc/meminfo; fi' 2>&1)
    if [[ $mem =~ ^[0-9]+$ && $mem -le 262144 && $mem -gt 200000 ]]; then ok "podman[$n] --memory 256m"; else bad "podman[$n] --memory 256m" "'$mem'"; fi
    addr=$(pm "${r[@]}" run --rm --network bridge localhost/busybox:e2e sh -c "ip -4 -o addr show eth0 | awk '{print \$4}'" 2>&1)
    [[ $addr == 10.88.* ]] && ok "podman[$n] network address $addr" || bad "podman[$n] network" "'$addr'"
done
echo "pass=$pass fail=$fail"
[[ $fail == 0 ]]
