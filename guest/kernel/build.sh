#!/usr/bin/env bash
# Build the vessel guest kernel (vmlinux + bzImage) from Debian's linux-source-6.1.
#
# Idempotent and cached outside the source tree:
#   $VESSEL_CACHE/kernel/<key>/{vmlinux,bzImage,config,build.log}
#   $VESSEL_CACHE/kernel/current -> <key>
# key = sha256(vessel.config + linux-source package version + this script).
# The last line on stdout is the output directory; everything else goes to stderr.
#
# Env: VESSEL_CACHE (default /var/cache/vessel), JOBS (default nproc),
#      VESSEL_KERNEL_KEEP_SRC=1 keeps the extracted tree for debugging.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FRAGMENT="$HERE/vessel.config"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
SRC_PKG=linux-source-6.1
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
CACHE="${VESSEL_CACHE:-/var/cache/vessel}"
KCACHE="$CACHE/kernel"
JOBS="${JOBS:-$(nproc)}"

log() { printf 'kernel-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "$FRAGMENT" ]] || die "missing $FRAGMENT"
[[ -f "$SRC_TARBALL" ]] || die "missing $SRC_TARBALL (apt-get install $SRC_PKG; see scripts/setup.sh)"
for tool in make gcc flex bison bc tar xz gzip sha256sum flock perl; do
  command -v "$tool" >/dev/null || die "missing build tool: $tool"
done

SRC_VERSION="$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null)" ||
  die "$SRC_PKG is not installed"
KEY="$( { cat "$FRAGMENT"; printf '\n%s=%s\n' "$SRC_PKG" "$SRC_VERSION"; cat "$SELF"; } |
  sha256sum | cut -c1-16)"
OUT="$KCACHE/$KEY"

outputs_present() { [[ -s "$OUT/vmlinux" && -s "$OUT/bzImage" && -s "$OUT/config" ]]; }

publish_current() {
  local tmp="$KCACHE/.current.$$"
  ln -sfn "$KEY" "$tmp"
  mv -T "$tmp" "$KCACHE/current"
}

mkdir -p "$KCACHE"

# Fast path without the lock.
if outputs_present; then
  [[ "$(readlink "$KCACHE/current" 2>/dev/null || true)" == "$KEY" ]] || publish_current
  log "up to date ($SRC_PKG $SRC_VERSION)"
  echo "$OUT"
  exit 0
fi

# One build at a time per cache; a second caller waits, then finds the outputs.
exec 9>"$KCACHE/.lock"
log "waiting for lock $KCACHE/.lock"
flock 9
if outputs_present; then
  publish_current
  log "built by a concurrent run"
  echo "$OUT"
  exit 0
fi

# Holding the lock, any leftover work/stage dir is from a killed build.
rm -rf "$KCACHE"/.work.* "$KCACHE"/.stage.* "$KCACHE"/.current.*

WORK="$(mktemp -d "$KCACHE/.work.$KEY.XXXXXX")"
LOG="$KCACHE/$KEY.build.log"
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && -f "$LOG" ]]; then
    log "build failed (rc=$rc); last lines of $LOG:"
    tail -n 40 "$LOG" >&2 || true
  fi
  if [[ "${VESSEL_KERNEL_KEEP_SRC:-0}" == 1 ]]; then
    log "keeping work tree $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
: >"$LOG"

START=$SECONDS
log "key $KEY ($SRC_PKG $SRC_VERSION), work dir $WORK, log $LOG"
# Skip what an x86 build never reads (docs except the sourced top-level
# Documentation/Kconfig, device trees, selftests, perf): ~20k fewer files to
# write now and to delete afterwards.
EXCLUDES=('Documentation/*/*' 'arch/*/boot/dts' tools/testing tools/perf)
log "extracting $SRC_TARBALL"
tar -C "$WORK" -xf "$SRC_TARBALL" "${EXCLUDES[@]/#/--exclude=linux-source-6.1/}"
SRC="$WORK/linux-source-6.1"
[[ -f "$SRC/Makefile" ]] || die "unexpected tarball layout under $WORK"

# Reproducible-ish build metadata (no host name / time baked into the image).
export KBUILD_BUILD_USER=vessel KBUILD_BUILD_HOST=vessel
export KBUILD_BUILD_TIMESTAMP="$SRC_PKG $SRC_VERSION"
MAKE=(make -C "$SRC" ARCH=x86_64)

log "configuring: tinyconfig + vessel.config"
(
  "${MAKE[@]}" tinyconfig
  cd "$SRC" && ARCH=x86_64 ./scripts/kconfig/merge_config.sh -m .config "$FRAGMENT"
  "${MAKE[@]}" olddefconfig
) >>"$LOG" 2>&1

# merge_config.sh silently drops options whose dependencies are unmet: check
# every explicit setting in the fragment against the final .config.
bad=()
while IFS= read -r line; do
  if [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    sym="${BASH_REMATCH[1]}"
    if got="$(grep -E "^$sym=" "$SRC/.config")"; then bad+=("$sym should be off, got $got"); fi
  elif [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    sym="${BASH_REMATCH[1]}"
    grep -qxF -- "$line" "$SRC/.config" ||
      bad+=("$line, got: $(grep -E "^$sym=|^# $sym is not set" "$SRC/.config" || echo '<absent>')")
  fi
done <"$FRAGMENT"
if ((${#bad[@]})); then
  log "fragment options not honoured in final .config (unmet dependencies?):"
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
log "config verified ($(grep -c '=y$' "$SRC/.config") options =y)"

log "building vmlinux bzImage with -j$JOBS (log: $LOG)"
"${MAKE[@]}" -j"$JOBS" vmlinux bzImage >>"$LOG" 2>&1

# Publish atomically: stage next to the final dir, then rename.
STAGE="$KCACHE/.stage.$KEY.$$"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp "$SRC/vmlinux" "$STAGE/vmlinux"
cp "$SRC/arch/x86/boot/bzImage" "$STAGE/bzImage"
cp "$SRC/.config" "$STAGE/config"
cp "$SRC/System.map" "$STAGE/System.map"
printf '%s=%s\nkey=%s\n' "$SRC_PKG" "$SRC_VERSION" "$KEY" >"$STAGE/version"
mv "$LOG" "$STAGE/build.log"
LOG="$STAGE/build.log"
rm -rf "$OUT"
mv -T "$STAGE" "$OUT"
LOG="$OUT/build.log"
publish_current

log "done in $((SECONDS - START))s: vmlinux $(stat -c %s "$OUT/vmlinux") B, bzImage $(stat -c %s "$OUT/bzImage") B"
echo "$OUT"
