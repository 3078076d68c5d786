#!/usr/bin/env bash
# Builds the virtqueue fuzz target with clang++ (libFuzzer + ASan + UBSan) and runs it.
# Usage: tests/fuzz/run.sh [seconds=30] [workdir=/tmp/vessel-fuzz]
# The corpus persists in <workdir>/queue-corpus between runs. Exits 77 (ctest's skip) when no
# clang++ with libFuzzer is available.
set -euo pipefail
secs=${1:-30}
work=${2:-/tmp/vessel-fuzz}
root=$(cd "$(dirname "$0")/../.." && pwd)
cxx=${CLANGXX:-clang++}

if ! command -v "$cxx" >/dev/null; then
  echo "fuzz: $cxx not found; skipping (apt-get install clang libclang-rt-14-dev)"
  exit 77
fi
mkdir -p "$work/queue-corpus"
probe="$work/probe.cc"
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe"
if ! "$cxx" -fsanitize=fuzzer "$probe" -o "$work/probe" 2>/dev/null; then
  echo "fuzz: $cxx cannot link libFuzzer; skipping (apt-get install libclang-rt-14-dev)"
  exit 77
fi

bin="$work/queue_fuzz"
"$cxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -fno-omit-frame-pointer -I"$root" \
  "$root/tests/fuzz/queue_fuzz.cc" "$root/virtio/queue.cc" "$root/vmm/guest_memory.cc" \
  "$root/vmm/uffd.cc" "$root/vmm/seccomp.cc" "$root/vmm/seccomp_filters.cc" -lseccomp -pthread \
  -o "$bin.tmp.$$"
mv "$bin.tmp.$$" "$bin"

# -timeout: a single input taking seconds means a hang; the queue does O(ring) work per input.
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=70000 \
  -print_final_stats=1 "$work/queue-corpus"
