#!/usr/bin/env bash
# Installs every Debian bookworm package vessel needs to build, test and benchmark.
# Idempotent: packages already present are not reinstalled, apt is not updated needlessly.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang-format
  # virtqueue fuzzer (tests/fuzz/run.sh): clang++ with libFuzzer, which bookworm ships in
  # libclang-rt-14-dev
  clang libclang-rt-14-dev
  liburing-dev libseccomp-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  linux-libc-dev
  # guest kernel build
  linux-source-6.1 bc flex bison libelf-dev libssl-dev dwarves xz-utils
  # guest userland and images
  busybox-static cpio e2fsprogs
  # nested harness: level-1 VM with KVM
  qemu-system-x86 linux-image-amd64 kmod
  # networking and containers (later issues)
  iproute2 nftables iperf3 socat
  # OCI runtime acceptance: podman with runc and crun as the peers (issue 6)
  podman runc crun conmon catatonit uidmap containernetworking-plugins
  # podman container checkpoint/restore checks for CRIU before it asks the runtime
  criu
  # Docker path of issue 6 (dockerd + containerd + runc shim) and the debootstrapped image
  docker.io debootstrap
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
