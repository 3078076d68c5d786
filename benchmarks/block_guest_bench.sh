#!/usr/bin/env bash
# In-guest block benchmark: 4 KiB random read/write IOPS and 1 MiB sequential throughput
# (O_DIRECT, 4 parallel jobs) on vessel's virtio-blk with the io_uring and sync engines, and on
# QEMU's virtio-blk (microvm, aio=io_uring), with the same kernel, initramfs, image and guest
# script. CPU per I/O: the VMM's user+sys time (guest time included) minus that of an idle
# boot of the same configuration, divided by the I/Os done.
# Usage (on a PVM host via the harness): tests/harness/maybe-nested -- benchmarks/block_guest_bench.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vessel=${VESSEL_BIN:-$root/build/vessel}
blkcheck=${BLKCHECK_BIN:-$root/build/tests/blkcheck}
kernel=${VESSEL_KERNEL:-${VESSEL_CACHE:-/var/cache/vessel}/kernel/current/vmlinux}
secs=${BENCH_SECONDS:-5}
work=$(mktemp -d /var/tmp/vessel-blkbench.XXXXXX)
trap 'rm -rf "$work"; [[ -z ${BENCH_DATA_DIR:-} ]] || rm -f "$BENCH_DATA_DIR/data.img"' EXIT

mkdir "$work/tools" && cp "$blkcheck" "$work/tools/"
"$vessel" mkimage --size 8M "$work/tools" "$work/tools.img"
# In the nested harness the work directory is overlayfs on tmpfs, whose files io_uring cannot
# read or write without blocking (no FMODE_NOWAIT in Linux 6.1): there every io_uring request
# goes through an io-wq worker thread. BENCH_DATA_DIR puts the data image elsewhere.
data_dir=${BENCH_DATA_DIR:-$work}
truncate -s 256M "$data_dir/data.img"

# The tools disk is the one that mounts; the data disk is the other (QEMU may order them
# differently from vessel).
guest_script="mkdir -p /t; if mount -o ro /dev/vdb /t 2>/dev/null; then d=/dev/vda; else mount -o ro /dev/vda /t; d=/dev/vdb; fi
for m in randread randwrite seqread seqwrite; do
  for j in 1 2 3 4; do /t/blkcheck bench \$m \$d $secs \$j > /tmp/\$m.\$j & done; wait
  cat /tmp/\$m.* | awk -v m=\$m '{split(\$1,a,\"=\"); split(\$2,b,\"=\"); split(\$3,c,\"=\"); o+=a[2]; by+=b[2]; if (c[2]>s) s=c[2]} END {printf \"RESULT %s ops=%d bytes=%d seconds=%.3f\\n\", m, o, by, s}'
done"

cmdline=$("$vessel" boot --kernel "$kernel" --print-cmdline)
"$vessel" boot --kernel "$kernel" --write-initrd "$work/bench.cpio" -- sh -c "$guest_script"
"$vessel" boot --kernel "$kernel" --write-initrd "$work/idle.cpio" -- echo IDLE-DONE

qemu_cmd=(qemu-system-x86_64 -M microvm,acpi=off -accel kvm -cpu host -m 256 -smp 1 -nodefaults
  -no-user-config -nographic -serial stdio -no-reboot -kernel "$kernel" -append "$cmdline"
  -drive "id=data,file=$data_dir/data.img,format=raw,if=none,aio=io_uring,cache=writeback"
  -device virtio-blk-device,drive=data
  -drive "id=tools,file=$work/tools.img,format=raw,if=none,readonly=on"
  -device virtio-blk-device,drive=tools)

# acpi=off: the guest kernel has no ACPI, and only then does QEMU announce the virtio-mmio
# devices on the kernel command line (auto-kernel-cmdline).

# Runs one configuration; prints the guest's RESULT lines and "CPU <seconds>".
run() {  # name bench|idle
  local name=$1 what=$2 out="$work/$1.$2.out"
  case $name in
    vessel-uring|vessel-sync)
      local eng=${name#vessel-}
      if [[ $what == bench ]]; then set -- sh -c "$guest_script"; else set -- echo IDLE-DONE; fi
      /usr/bin/time -f "CPU %U %S" -o "$work/time" "$vessel" boot --kernel "$kernel" --memory 256 \
        --disk "$data_dir/data.img,engine=$eng" --disk "$work/tools.img,ro" -- "$@" > "$out" 2>&1 ;;
    qemu-io_uring)
      # QEMU's microvm has no i8042 to reset through: stop it when the guest is done.
      local marker=RESULT\ seqwrite
      [[ $what == idle ]] && marker=IDLE-DONE
      /usr/bin/time -f "CPU %U %S" -o "$work/time" "${qemu_cmd[@]}" -initrd "$work/$what.cpio" \
        > "$out" 2>&1 &
      local timer=$! i
      for i in $(seq 1 600); do
        sleep 0.5
        grep -q "$marker" "$out" && break
      done
      # Only QEMU itself (time's child): time must live to write the CPU figures.
      pkill -TERM -P "$timer" || true
      wait "$timer" || true ;;
  esac
  [[ -n ${BENCH_DEBUG:-} ]] && sed "s/^/  $name.$what | /" "$out" >&2
  if [[ $what == bench ]] && ! grep RESULT "$out"; then
    echo "block_guest_bench: $name produced no results; its output ends with:" >&2
    tail -n "${BENCH_TAIL:-20}" "$out" | sed 's/^/  | /' >&2
  fi
  awk '/^CPU/ {print "CPU", $2 + $3}' "$work/time"
}

printf '%-14s %-10s %12s %12s %12s\n' config mode "IOPS" "MiB/s" "CPU us/IO"
for cfg in ${BENCH_CONFIGS:-vessel-uring vessel-sync qemu-io_uring}; do
  idle=$(run "$cfg" idle | awk '/^CPU/ {print $2}')
  res=$(run "$cfg" bench)
  cpu=$(echo "$res" | awk '/^CPU/ {print $2}')
  echo "$res" | awk -v cfg="$cfg" -v cpu="$cpu" -v idle="$idle" '
    /^RESULT/ { split($3,o,"="); split($4,b,"="); split($5,s,"="); ops[$2]=o[2]; by[$2]=b[2]; sec[$2]=s[2]; tot+=o[2]; order[n++]=$2 }
    END { for (i=0;i<n;i++) { m=order[i]; printf "%-14s %-10s %12.0f %12.1f %12.1f\n", cfg, m, ops[m]/sec[m], by[m]/sec[m]/1048576, (cpu-idle)*1e6/tot } }'
done
