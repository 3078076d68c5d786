#!/usr/bin/env bash
# vessel boot --jail end to end: the guest runs as usual (exit status, disks, the agent over
# the vsock socket) while its VMM is PID 1 of its own namespace, unprivileged, with a root
# holding only its files; the memory limit kills a VMM whose guest outgrows it; bad options
# are clear errors; nothing (cgroup, mount) is left afterwards. Needs root and a KVM that
# boots Linux: run it through tests/harness/maybe-nested (77 = skipped).
set -u
vessel=${1:?usage: boot_jail_e2e.sh VESSEL_BIN}
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root"; exit 77; }
[[ -e /dev/kvm ]] || { echo "SKIP: no /dev/kvm"; exit 77; }
tmp=$(mktemp -d /var/tmp/vessel-jail-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/../cli/lib.sh"
export VESSEL_RUNTIME_DIR=$tmp/run

leftovers() {  # prints any cgroup or mount of a boot jail
    find /sys/fs/cgroup -maxdepth 4 -path '*/vessel/boot-*' -type d 2>/dev/null
    grep ' /run/vessel-jail ' /proc/self/mountinfo
}
before=$(leftovers)

# Errors before anything is made: exit 2 for bad options, a message naming the problem.
expect bad-user 2 "uid=no-such-user-x: no such user" "$vessel" boot --jail=uid=no-such-user-x -- true
expect bad-key 2 "unknown option 'colour'" "$vessel" boot --jail=colour=red -- true
expect bad-cgroup 2 "cgroup='../x'" "$vessel" boot --jail=cgroup=../x -- true
expect uid-zero 1 "must not be 0" "$vessel" boot --jail=uid=0 -- true

# 1. Exit status and a root disk the jailed VMM reads and writes.
mkdir -p "$tmp/root/bin"
cp /bin/busybox "$tmp/root/bin/"  # static
for a in sh cat sync; do ln -s busybox "$tmp/root/bin/$a"; done
echo "hello from the disk" > "$tmp/root/hello"
"$vessel" mkimage --size 32M "$tmp/root" "$tmp/root.img" > /dev/null
out=$("$vessel" boot --jail --disk "$tmp/root.img,root" -- \
    /bin/sh -c 'cat /hello; echo written > /new; sync; exit 7' 2>&1)
rc=$?
check "disk boot exits 7 (got $rc: $out)" test "$rc" = 7
check "disk read in the jail ($out)" grep -q "hello from the disk" <<< "$out"
check "disk written in the jail" sh -c "debugfs -R 'cat /new' '$tmp/root.img' 2>/dev/null | grep -q written"

# The jailed child's supervisor thread (Machine::run) runs under its own seccomp filter: the
# selftest hook makes it open an IP socket, and the VMM dies by SIGSYS (159) before the guest
# runs.
out=$(VESSEL_SECCOMP_SELFTEST=supervisor "$vessel" boot --jail --disk "$tmp/root.img,root" -- \
    /bin/sh -c 'echo ran' 2>&1)
rc=$?
check "supervisor filter kills on a forbidden call: 159 (got $rc: $out)" test "$rc" = 159

# 2. The agent (its vsock socket reached from inside the jail), the VMM's confinement seen
#    from outside, and a signal to `vessel boot` reaching the command.
"$vessel" boot --jail --agent -- sh -c 'echo started; exec sleep 120' > "$tmp/agent.out" 2>&1 &
sup=$!
for _ in $(seq 600); do grep -q started "$tmp/agent.out" 2>/dev/null && break; sleep 0.5; done
check "agent output through the jail ($(cat "$tmp/agent.out"))" grep -q started "$tmp/agent.out"
vmm=$(pgrep -P "$sup" | head -1)
check "the VMM is a child of vessel boot" test -n "$vmm"
if [[ -n $vmm ]]; then
    status=$(cat "/proc/$vmm/status")
    check "VMM is PID 1 of its namespace" grep -qE '^NSpid:[[:space:]]+[0-9]+[[:space:]]+1$' <<< "$status"
    uid=$(awk '/^Uid:/ {print $2}' <<< "$status")
    check "VMM uid is not root (uid $uid)" test -n "$uid" -a "$uid" != 0
    check "VMM has no_new_privs" grep -qE '^NoNewPrivs:[[:space:]]+1' <<< "$status"
    check "VMM has no capabilities" grep -qE '^CapEff:[[:space:]]+0+$' <<< "$status"
    for ns in mnt pid ipc; do
        check "VMM has its own $ns namespace" test "$(readlink "/proc/$vmm/ns/$ns")" != "$(readlink /proc/self/ns/$ns)"
    done
    check "no /etc/passwd in the VMM's root" test ! -e "/proc/$vmm/root/etc/passwd"
    check "no /usr in the VMM's root" test ! -e "/proc/$vmm/root/usr"
    check "/dev/kvm in the VMM's root" test -c "/proc/$vmm/root/dev/kvm"
    check "VMM in its cgroup" grep -q "vessel/boot-$sup" "/proc/$vmm/cgroup"
fi
kill -TERM "$sup"
wait "$sup"
rc=$?
check "SIGTERM to vessel boot reaches the command: 143 (got $rc)" test "$rc" = 143

# 3. The memory limit: a guest filling its RAM takes its VMM over the cgroup's limit.
"$vessel" boot --memory 512 --jail=mem=160 -- \
    sh -c 'dd if=/dev/zero of=/tmp/fill bs=1M count=400 2>/dev/null; echo survived' > "$tmp/oom.out" 2>&1
rc=$?
check "VMM over its memory limit is OOM-killed: 137 (got $rc: $(tail -2 "$tmp/oom.out"))" test "$rc" = 137

check "no cgroup or mount left ($(leftovers))" test "$(leftovers)" = "$before"
echo "boot_jail_e2e: $pass passed, $fail failed"
[[ $fail == 0 ]]
