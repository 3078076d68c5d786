#!/usr/bin/env bash
# Network benchmark: iperf3 TCP throughput guest->host and host->guest, and ping round-trip
# time guest->host, for vessel's virtio-net and for QEMU microvm's virtio-net on a tap with
# vhost off, both on the same Linux bridge (a vessel network), same kernel and tools.
# Runs in a network namespace of its own: nothing outside it is touched or contacted.
# Usage (on a PVM host via the harness): tests/harness/maybe-nested -- benchmarks/net_bench.sh
set -euo pipefail
if [[ -z ${NETBENCH_IN_NS:-} ]]; then
  exec unshare -n env NETBENCH_IN_NS=1 "$0" "$@"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
vessel=${VESSEL_BIN:-$root/build/vessel}
kernel=${VESSEL_KERNEL:-${VESSEL_CACHE:-/var/cache/vessel}/kernel/current/vmlinux}
secs=${BENCH_SECONDS:-5}
runs=${BENCH_RUNS:-1}
work=$(mktemp -d /var/tmp/vessel-netbench.XXXXXX)
export VESSEL_STATE_DIR=$work/state
cleanup() {
  [[ -f $work/iperf.pid ]] && kill "$(cat "$work/iperf.pid")" 2>/dev/null || true
  "$vessel" network rm bench >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ip link set lo up

# iperf3 is dynamically linked: ship it with its libraries and run it through their loader.
mkdir -p "$work/tools/lib"
cp /usr/bin/iperf3 "$work/tools/"
for lib in $(ldd /usr/bin/iperf3 | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  cp -L "$lib" "$work/tools/lib/"
done
"$vessel" mkimage --size 64M "$work/tools" "$work/tools.img" >/dev/null

"$vessel" network create bench --subnet 10.66.0.0/24 >/dev/null
bridge=$("$vessel" network ls --format json | python3 -c 'import json,sys; print([n for n in json.load(sys.stdin) if n["name"]=="bench"][0]["bridge"])')
iperf3 -s -B 10.66.0.1 -D --pidfile "$work/iperf.pid"
sleep 0.5

guest_script="mkdir -p /t && mount -o ro /dev/vda /t
I='/t/lib/ld-linux-x86-64.so.2 --library-path /t/lib /t/iperf3'
\$I -c 10.66.0.1 -t $secs -f m | awk '/receiver/ {for (i=1;i<=NF;i++) if (\$i==\"Mbits/sec\") print \"RESULT up\", \$(i-1)}'
\$I -c 10.66.0.1 -t $secs -f m -R | awk '/receiver/ {for (i=1;i<=NF;i++) if (\$i==\"Mbits/sec\") print \"RESULT down\", \$(i-1)}'
ping -c 20 -i 0.2 10.66.0.1 | awk -F'[/ ]+' '/round-trip/ {print \"RESULT rtt_ms\", \$(NF-2)}'
echo RESULT done"

cmdline=$("$vessel" boot --kernel "$kernel" --print-cmdline)
"$vessel" boot --kernel "$kernel" --write-initrd "$work/bench.cpio" -- sh -c "$guest_script"

run_vessel() {
  "$vessel" boot --kernel "$kernel" --memory 256 --net "network=bench,ip=10.66.0.10${1:+,engine=$1}" \
    --disk "$work/tools.img,ro" -- sh -c "$guest_script" 2>&1
}

run_qemu() {
  ip tuntap add dev qtap0 mode tap vnet_hdr
  ip link set qtap0 master "$bridge" up
  local out=$work/qemu.out i
  qemu-system-x86_64 -M microvm,acpi=off -accel kvm -cpu host -m 256 -smp 1 -nodefaults \
    -no-user-config -nographic -serial stdio -no-reboot -kernel "$kernel" \
    -initrd "$work/bench.cpio" \
    -append "$cmdline ip=10.66.0.11::10.66.0.1:255.255.255.0::eth0:off" \
    -netdev tap,id=n0,ifname=qtap0,script=no,downscript=no,vhost=off \
    -device virtio-net-device,netdev=n0,mac=02:00:0a:42:00:0b \
    -drive "id=tools,file=$work/tools.img,format=raw,if=none,readonly=on" \
    -device virtio-blk-device,drive=tools >"$out" 2>&1 &
  local pid=$!
  # microvm has no i8042 to reset through: stop QEMU once the guest is done.
  for i in $(seq 1 600); do
    sleep 0.5
    grep -q "RESULT done" "$out" && break
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  ip link del qtap0 2>/dev/null || true
  cat "$out"
}

printf '%-12s %4s %14s %14s %10s\n' config run "up Mbit/s" "down Mbit/s" "rtt ms"
for r in $(seq 1 "$runs"); do
  for cfg in ${BENCH_CONFIGS:-vessel vessel-sync qemu}; do
    case $cfg in
      vessel) out=$(run_vessel) || true ;;
      vessel-sync) out=$(run_vessel sync) || true ;;
      qemu) out=$(run_qemu) || true ;;
    esac
    if ! grep -q "RESULT done" <<<"$out"; then
      echo "net_bench: $cfg produced no results; its output ends with:" >&2
      tail -n 20 <<<"$out" | sed 's/^/  | /' >&2
      continue
    fi
    grep -E '^(netstats|uring)' <<<"$out" >&2 || true
    awk -v cfg="$cfg" -v run="$r" '/^RESULT/ {v[$2]=$3}
      END {printf "%-12s %4s %14s %14s %10s\n", cfg, run, v["up"], v["down"], v["rtt_ms"]}' <<<"$out"
  done
done
