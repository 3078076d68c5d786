#!/usr/bin/env bash
# Boot-test a built vessel guest kernel under QEMU.
#
#   guest/kernel/smoke-test.sh [KERNEL_DIR]      (default: $VESSEL_CACHE/kernel/current)
#
# Builds a throw-away busybox-static initramfs whose /init checks SMP, memory,
# devtmpfs, ext4/overlay support, overlay + cgroup2 mounts, and the virtio-mmio
# devices QEMU announces on the command line (virtio_mmio.device=...):
# blk (ext4 image), net (unconnected NIC, static ip=), console (hvc0), rng.
# Boots KERNEL_DIR/bzImage on `-M microvm,acpi=off` (MP table from qboot, no
# ACPI, no PCI), then KERNEL_DIR/vmlinux via the PVH ELF entry.
#
# Env: ACCEL=tcg|kvm (default tcg), CPU (default max; host with kvm), SMP (default 2), MEM (default 256),
#      BOOT_TIMEOUT seconds per boot (default 180), SKIP_PVH=1, KEEP_TMP=1.
# Exit status: 0 only if every boot printed VESSEL-SMOKE: PASS.
set -euo pipefail

KDIR="${1:-${VESSEL_CACHE:-/var/cache/vessel}/kernel/current}"
ACCEL="${ACCEL:-tcg}"
SMP="${SMP:-2}"
MEM="${MEM:-256}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-180}"
QEMU="${QEMU:-qemu-system-x86_64}"
if [[ "$ACCEL" == kvm ]]; then CPU="${CPU:-host}"; else CPU="${CPU:-max}"; fi

log() { printf 'smoke: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ -f "$KDIR/bzImage" ]] || die "no bzImage in $KDIR (run guest/kernel/build.sh)"
command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
[[ -x "$BUSYBOX" ]] || die "busybox-static not installed"
if readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'program interpreter'; then
  die "$BUSYBOX is dynamically linked (apt-get install busybox-static)"
fi
for t in cpio mkfs.ext4 timeout; do command -v "$t" >/dev/null || die "missing $t"; done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vessel-smoke.XXXXXX")"
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# ---- initramfs -------------------------------------------------------------
ROOT="$TMP/root"
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,mnt,run}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [[ -e "$ROOT/bin/$applet" ]] || ln -s busybox "$ROOT/bin/$applet"
done
cat >"$ROOT/init" <<EOF
#!/bin/sh
export PATH=/bin:/sbin
EXPECT_CPUS=$SMP
EOF
cat >>"$ROOT/init" <<'EOF'
fails=""
fail() { fails="$fails $1"; echo "VESSEL-SMOKE: check failed: $1"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "VESSEL-SMOKE: init reached at uptime $(cut -d' ' -f1 /proc/uptime)s"
echo "VESSEL-SMOKE: cmdline: $(cat /proc/cmdline)"
n=$(nproc); echo "VESSEL-SMOKE: nproc=$n"
[ "$n" = "$EXPECT_CPUS" ] || fail "nproc($n!=$EXPECT_CPUS)"
echo "VESSEL-SMOKE: $(head -1 /proc/meminfo)"
echo "VESSEL-SMOKE: date=$(date -u +%FT%TZ)"
echo "VESSEL-SMOKE: clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
# DEVTMPFS_MOUNT does not apply to initramfs boots: init must mount /dev itself.
mount -t devtmpfs devtmpfs /dev || fail devtmpfs
mount -t devtmpfs | grep -q devtmpfs && echo "VESSEL-SMOKE: $(mount -t devtmpfs)" || fail devtmpfs-list
for fs in ext4 overlay tmpfs cgroup2; do
  grep -qw "$fs" /proc/filesystems || fail "fs-$fs"
done
# overlayfs with a tmpfs upper (the container rootfs pattern)
mount -t tmpfs tmpfs /tmp && mkdir -p /tmp/l /tmp/u /tmp/w /tmp/m && echo lower >/tmp/l/f &&
  mount -t overlay overlay -o lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w /tmp/m &&
  echo upper >/tmp/m/f && [ "$(cat /tmp/l/f)" = lower ] && [ "$(cat /tmp/u/f)" = upper ] || fail overlay-mount
# cgroup v2 with the controllers the runtime needs
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup || fail cgroup2-mount
ctrls="$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
echo "VESSEL-SMOKE: cgroup2 controllers: $ctrls"
for c in cpuset cpu memory pids; do echo " $ctrls " | grep -q " $c " || fail "cgroup-$c"; done
# virtio-mmio devices (only when the harness attached them)
if [ -e /vessel-devices ]; then
  [ -b /dev/vda ] && mount -t ext4 /dev/vda /mnt && [ "$(cat /mnt/marker)" = vessel ] || fail virtio-blk-ext4
  ip addr show eth0 2>/dev/null | grep -q 192.0.2.2 || fail virtio-net-ip_pnp
  [ -c /dev/hvc0 ] || fail virtio-console
  grep -q virtio /sys/class/misc/hw_random/rng_current 2>/dev/null || fail virtio-rng
fi
if [ -z "$fails" ]; then echo "VESSEL-SMOKE: PASS"; else echo "VESSEL-SMOKE: FAIL:$fails"; fi
sync
reboot -f
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$TMP/test.cpio"

# with-devices variant: same tree plus a flag file
touch "$ROOT/vessel-devices"
(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$TMP/test-dev.cpio"

mkdir -p "$TMP/disk" && echo vessel >"$TMP/disk/marker"
mkfs.ext4 -q -F -d "$TMP/disk" "$TMP/disk.img" 16M

# ---- boots -----------------------------------------------------------------
# reboot=t (triple fault): QEMU's microvm has no i8042, so reboot=k falls
# through to a real-mode BIOS restart that qboot turns into a fresh boot, and
# -no-reboot never fires. A triple fault is a reset QEMU (and KVM, as
# KVM_EXIT_SHUTDOWN) reports, so the VM exits promptly.
CMDLINE="${CMDLINE:-console=ttyS0 reboot=t panic=-1}"
status=0

# boot NAME KERNEL CPIO APPEND [extra qemu args...]
boot() {
  local name="$1" kernel="$2" cpio="$3" append="$4"; shift 4
  local out="$TMP/$name.log" t0 t1 rc=0
  log "[$name] $QEMU -M microvm,acpi=off -accel $ACCEL -smp $SMP -kernel $(basename "$kernel") $*"
  t0=$(date +%s.%N)
  timeout --foreground -k 5 "$BOOT_TIMEOUT" "$QEMU" -M microvm,acpi=off -accel "$ACCEL" -cpu "$CPU" \
    -m "$MEM" -smp "$SMP" -nographic -no-reboot -kernel "$kernel" -initrd "$cpio" \
    -append "$append" "$@" </dev/null >"$out" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  tr -d '\r' <"$out" | grep -E 'VESSEL-SMOKE|Linux version|smpboot: (Total|Allowing)|MPTABLE|Kernel panic|virtio_mmio' >&2 || true
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    log "[$name] timed out after ${BOOT_TIMEOUT}s; tail of console:"; tail -n 30 "$out" >&2
    status=1; return
  fi
  if grep -q 'VESSEL-SMOKE: PASS' "$out"; then
    log "[$name] PASS (qemu rc=$rc, wall $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')s)"
  else
    log "[$name] FAILED (qemu rc=$rc); tail of console:"; tail -n 40 "$out" >&2
    status=1
  fi
}

boot bzImage "$KDIR/bzImage" "$TMP/test-dev.cpio" \
  "$CMDLINE ip=192.0.2.2::192.0.2.1:255.255.255.0::eth0:off" \
  -drive id=d0,file="$TMP/disk.img",format=raw,if=none -device virtio-blk-device,drive=d0 \
  -device virtio-net-device \
  -chardev null,id=vc0 -device virtio-serial-device -device virtconsole,chardev=vc0 \
  -device virtio-rng-device

if [[ "${SKIP_PVH:-0}" != 1 && -f "$KDIR/vmlinux" ]]; then
  boot vmlinux-pvh "$KDIR/vmlinux" "$TMP/test.cpio" "$CMDLINE"
fi

if [[ $status -eq 0 ]]; then log "all boots passed"; else log "FAILED"; fi
exit $status
