#!/usr/bin/env bash
# Bad input to the vessel CLI: a clear message naming the problem, a non-zero exit, nothing
# left behind. Runs without booting anything (errors are caught before the guest starts).
set -u
vessel=${1:?usage: errors.sh VESSEL_BIN}
tmp=$(mktemp -d /var/tmp/vessel-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"


echo garbage > "$tmp/notakernel"
expect missing-kernel 1 "/nonexistent/vmlinux" "$vessel" boot --kernel /nonexistent/vmlinux -- true
expect memory-too-small 1 "memory size 1 MiB out of range" "$vessel" boot --kernel "$tmp/notakernel" --memory 1 -- true
expect memory-bad-suffix 2 "unknown suffix" "$vessel" boot --memory 12X -- true
expect cpus-zero 1 "vCPU count 0 out of range" "$vessel" boot --kernel "$tmp/notakernel" --cpus 0 -- true
expect cpus-not-a-number 2 "is not a count" "$vessel" boot --cpus many -- true
expect missing-initramfs 1 "opening initramfs /nonexistent.cpio" "$vessel" boot --kernel "$tmp/notakernel" --initrd /nonexistent.cpio -- true
expect unknown-option 2 "unknown option '--bogus'" "$vessel" boot --bogus -- true
expect bad-disk-option 2 "unknown option 'bogus'" "$vessel" boot --disk "$tmp/x.img,bogus" -- true
expect two-root-disks 2 "only one disk can be the root" "$vessel" boot --kernel "$tmp/notakernel" --disk a,root --disk b,root -- true
expect unknown-command 2 "unknown command 'frobnicate'" "$vessel" frobnicate
expect mkimage-missing-dir 1 "source directory /nonexistent" "$vessel" mkimage /nonexistent "$tmp/out.img"
mkdir -p "$tmp/big" && head -c 8M /dev/urandom > "$tmp/big/blob"
expect mkimage-too-small 1 "mkfs.ext4 failed" "$vessel" mkimage --size 4M "$tmp/big" "$tmp/out.img"
# Nothing left behind by the failed mkimage.
if compgen -G "$tmp/out.img*" > /dev/null; then
    fail=$((fail + 1))
    echo "FAIL mkimage left files behind: $(ls "$tmp"/out.img*)"
else
    pass=$((pass + 1))
fi
echo "cli: $pass passed, $fail failed"
((fail == 0))
