#!/bin/bash
# Builds the debootstrapped Debian rootfs used by the OCI e2e tests (issue 6), once, and
# caches it outside the source tree as a tar for `podman import` / `docker import`:
#   ${VESSEL_CACHE:-/var/cache/vessel}/images/debian-bookworm.tar
# Prints the tar's path. Reused when present; needs root and Debian's mirror (the nested
# harness has no network, so this runs on the host before the test enters it).
# Exit 77 (skip) when it cannot be built here: not root, no debootstrap, no mirror.
set -euo pipefail
suite=${VESSEL_DEBIAN_SUITE:-bookworm}
mirror=${VESSEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
dir=${VESSEL_CACHE:-/var/cache/vessel}/images
out=$dir/debian-$suite.tar
if [[ -s $out ]]; then
    echo "$out"
    exit 0
fi
[[ $(id -u) == 0 ]] || { echo "make-debian: needs root to debootstrap" >&2; exit 77; }
command -v debootstrap >/dev/null || { echo "make-debian: debootstrap not installed" >&2; exit 77; }
mkdir -p "$dir"
exec 9>"$dir/.debian-$suite.lock"
flock 9
if [[ -s $out ]]; then echo "$out"; exit 0; fi  # built by another run meanwhile
work=$(mktemp -d "$dir/.debian-$suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "make-debian: debootstrap --variant=minbase $suite from $mirror (a few minutes)" >&2
if ! debootstrap --variant=minbase "$suite" "$work/root" "$mirror" >"$work/log" 2>&1; then
    tail -20 "$work/log" >&2
    # No mirror (offline machine) is a reason to skip, anything else a failure.
    if grep -qE "Failed getting release file|Temporary failure resolving|Could not resolve" "$work/log"; then
        echo "make-debian: mirror $mirror unreachable" >&2
        exit 77
    fi
    echo "make-debian: debootstrap failed" >&2
    exit 1
fi
# Apt's downloaded packages are not part of the image.
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar --numeric-owner -C "$work/root" -cf "$work/image.tar" .
mv "$work/image.tar" "$out"
echo "make-debian: $out ($(du -m "$out" | cut -f1) MiB) in $(($(date +%s) - start)) s" >&2
echo "$out"
