#!/bin/bash
# End-to-end test of vessel under Docker: Debian's dockerd and containerd (whose runc shim,
# containerd-shim-runc-v2, drives the runtime with runc's command line) are started here with
# vessel registered under "runtimes" in daemon.json, and the same checks as the podman
# sequence of tests/e2e/podman/oci_e2e.sh run with `--runtime vessel` and with runc, so that
# a behavioural difference shows up as a failure. Needs root and a KVM that boots Linux: run
# it through tests/harness/maybe-nested (exit 77 = skipped).
#
# The daemons keep all their state on tmpfs mounts and private paths (their own sockets,
# exec root, data root and bridge), so they never touch a Docker installed on the machine,
# and everything is removed at the end. Docker's iptables handling is off ("iptables":
# false, as measured in the harness); the bridge is one this script makes (vsldk0), which
# Docker takes as its default network.
set -u
vessel=$(realpath "${1:?usage: docker_e2e.sh VESSEL_BIN}")
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root"; exit 77; }
[[ -e /dev/kvm ]] || { echo "SKIP: no /dev/kvm"; exit 77; }
for c in dockerd containerd containerd-shim-runc-v2 docker runc busybox; do
    command -v "$c" >/dev/null || { echo "SKIP: $c not installed (Debian's docker.io)"; exit 77; }
done

work=$(mktemp -d /var/tmp/vessel-docker-e2e.XXXXXX)
here=$(dirname "$(realpath "$0")")
# shellcheck source=tests/e2e/docker/daemons.sh
. "$here/daemons.sh"
subnet=$DK_SUBNET
pass=0 fail=0
cleanup() {
    dk_stop
    rm -rf "$work"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
check() {  # name, expected, actual
    if [[ $2 == "$3" ]]; then ok "$1"; else bad "$1" "got '$3', want '$2'"; fi
}
pty_session=$here/../podman/pty_session.py
last_count() { dk logs "$1" 2>/dev/null | tail -1; }

dk_start "$vessel" "$work" || { bad dockerd "did not start"; exit 1; }
ok "dockerd up ($(dk version -f '{{.Server.Version}}'), runtimes: $(dk info -f '{{range $k, $v := .Runtimes}}{{$k}} {{end}}'))"

# The busybox-static rootfs as an image.
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for t in sh echo cat ls sleep true false grep head ip hostname id kill ps wc awk cut sed ping; do
    ln -sf busybox "$rootfs/bin/$t"
done
tar -C "$rootfs" -c . | dk import - busybox:e2e >/dev/null || { bad docker-import failed; exit 1; }
img=busybox:e2e
for rt in runc vessel; do
    r=(--runtime "$rt")
    check "docker[$rt] run echo" hi "$(dk run --rm "${r[@]}" $img echo hi 2>&1)"
    dk run --rm "${r[@]}" $img sh -c 'exit 42'
    check "docker[$rt] exit 42" 42 "$?"
    out=$(dk run --rm "${r[@]}" $img sh -c 'echo o; echo e >&2' 2>"$work/err")
    check "docker[$rt] stdout" o "$out"
    check "docker[$rt] stderr" e "$(cat "$work/err")"
    dk run --rm "${r[@]}" $img /nosuch 2>"$work/err"; rc=$?
    grep -qi "not found\|no such file" "$work/err" && m=message || m="$(cat "$work/err")"
    check "docker[$rt] missing binary" "127:message" "$rc:$m"
    cid=$(dk run -d "${r[@]}" $img sh -c 'trap "exit 0" TERM; while :; do sleep 0.1; done')
    check "docker[$rt] run -d" 0 "$?"
    check "docker[$rt] running" running "$(dk inspect -f '{{.State.Status}}' "$cid" 2>&1)"
    check "docker[$rt] ps" "${cid:0:12}" "$(dk ps -q --no-trunc | grep "^$cid" | cut -c1-12)"
    check "docker[$rt] exec" hello "$(dk exec "$cid" echo hello 2>&1)"
    dk exec "$cid" sh -c 'exit 4'; check "docker[$rt] exec status" 4 "$?"
    dk stop -t 5 "$cid" >/dev/null; check "docker[$rt] stop" 0 "$?"
    check "docker[$rt] stopped exit code" 0 "$(dk inspect -f '{{.State.ExitCode}}' "$cid")"
    dk rm "$cid" >/dev/null
    # A process that ignores SIGTERM: stop kills it after the timeout.
    cid=$(dk run -d "${r[@]}" $img sh -c 'trap "" TERM; while :; do sleep 0.1; done')
    dk stop -t 2 "$cid" >/dev/null; check "docker[$rt] stop timeout" 0 "$?"
    check "docker[$rt] stop-killed exit code" 137 "$(dk inspect -f '{{.State.ExitCode}}' "$cid")"
    dk rm "$cid" >/dev/null
    cid=$(dk run -d "${r[@]}" $img sleep 1000)
    dk kill "$cid" >/dev/null; check "docker[$rt] kill" 0 "$?"
    dk wait "$cid" >/dev/null
    check "docker[$rt] killed exit code" 137 "$(dk inspect -f '{{.State.ExitCode}}' "$cid")"
    dk rm -f "$cid" >/dev/null; check "docker[$rt] rm" 0 "$?"
    cid=$(dk run -d "${r[@]}" $img sleep 1000)
    dk rm -f "$cid" >/dev/null; check "docker[$rt] rm -f running" 0 "$?"
    check "docker[$rt] nothing left" "" "$(dk ps -aq)"
    # -t: the pty's master goes to the shim through --console-socket.
    out=$(dk run --rm -t "${r[@]}" $img sh -c 'test -t 0 && echo tty' 2>&1 | tr -d '\r')
    check "docker[$rt] run -t" tty "$out"
    mem=$(dk run --rm "${r[@]}" --memory 256m $img sh -c 'if [ -e /sys/fs/cgroup/memory.max ]; then echo $(($(cat /sys/fs/cgroup/memory.max) / 1024)); else awk "/MemTotal/ {print \$2}" /proc/meminfo; fi' 2>"$work/err")
    if [[ $mem =~ ^[0-9]+$ && $mem -le 262144 && $mem -gt 200000 ]]; then ok "docker[$rt] --memory 256m"; else bad "docker[$rt] --memory 256m" "'$mem'"; fi
    # Docker's bridge: the guest has the address Docker assigned and reaches the bridge.
    cid=$(dk run -d "${r[@]}" $img sleep 1000)
    want=$(dk inspect -f '{{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}' "$cid")
    got=$(dk exec "$cid" sh -c "ip -4 -o addr show eth0 | awk '{print \$4}'" 2>&1)
    [[ $want == "$subnet".* ]] && check "docker[$rt] network address $want" "$want" "$got" ||
        bad "docker[$rt] network address" "docker assigned '$want'"
    dk exec "$cid" ping -c 1 -W 5 "$subnet.1" >/dev/null 2>&1
    check "docker[$rt] network reaches the bridge" 0 "$?"
    dk rm -f "$cid" >/dev/null
    # -it: a shell at a real terminal (the test's own pty) evaluates typed input.
    out=$("$pty_session" "$DK_CLI" -H "unix://$DK_RUN/docker.sock" run --rm -it "${r[@]}" $img sh)
    rc=$?
    [[ $rc == 3 && $out == *42* ]] && ok "docker[$rt] run -it" ||
        bad "docker[$rt] run -it" "status $rc, terminal: $(echo "$out" | tr '\n' '|')"
    cid=$(dk run -d "${r[@]}" $img sh -c 'i=0; while :; do i=$((i + 1)); echo $i; sleep 0.2; done')
    out=$(dk exec -t "$cid" sh -c 'test -t 0 && echo tty' 2>&1 | tr -d '\r')
    # runc 1.1.5 under Docker 20.10 cannot open /dev/ptmx for `exec -t` in the nested
    # harness (ENODEV; `run -t` works): a known failure of the peer there, reported as a skip.
    if [[ $rt == runc && $out == *"open /dev/ptmx: no such device"* ]]; then
        echo "SKIP docker[runc] exec -t, exec -it: runc: $out"
    else
        check "docker[$rt] exec -t" tty "$out"
        out=$("$pty_session" "$DK_CLI" -H "unix://$DK_RUN/docker.sock" exec -it "$cid" sh)
        rc=$?
        [[ $rc == 3 && $out == *42* ]] && ok "docker[$rt] exec -it" ||
            bad "docker[$rt] exec -it" "status $rc, terminal: $(echo "$out" | tr '\n' '|')"
    fi
    # pause: the counter stops while paused and goes on after unpause.
    for _ in $(seq 100); do [[ $(last_count "$cid") -ge 2 ]] && break; sleep 0.2; done
    dk pause "$cid" >/dev/null; check "docker[$rt] pause" 0 "$?"
    check "docker[$rt] paused state" paused "$(dk inspect -f '{{.State.Status}}' "$cid")"
    sleep 1; a=$(last_count "$cid"); sleep 3; b=$(last_count "$cid")
    [[ -n $a && $a == "$b" ]] && ok "docker[$rt] no progress while paused ($a)" ||
        bad "docker[$rt] paused counter" "'$a' then '$b'"
    dk unpause "$cid" >/dev/null; check "docker[$rt] unpause" 0 "$?"
    check "docker[$rt] running again" running "$(dk inspect -f '{{.State.Status}}' "$cid")"
    for _ in $(seq 150); do [[ $(last_count "$cid") -gt ${b:-0} ]] && break; sleep 0.2; done
    c=$(last_count "$cid")
    [[ -n $c && $c -gt ${b:-0} ]] && ok "docker[$rt] progress after unpause ($b -> $c)" ||
        bad "docker[$rt] counter after unpause" "'$b' then '$c'"
    dk rm -f "$cid" >/dev/null
done
echo "pass=$pass fail=$fail"
if [[ $fail != 0 ]]; then
    echo "--- dockerd log (tail)"; tail -40 "$work/dockerd.log"
    echo "--- containerd log (tail)"; tail -40 "$work/containerd.log"
fi
[[ $fail == 0 ]]
