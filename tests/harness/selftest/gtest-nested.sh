#!/usr/bin/env bash
# Checks gtest-nested's resume-after-freeze logic with a stand-in l1run (freezes on demand) and
# a stand-in gtest binary; no VM involved.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
cp "$here/gtest-nested" "$t/"
printf '#!/bin/sh\necho pvm\n' >"$t/kvm-kind"
# l1run stand-in: runs the command; "freezes" (exit 123) once per line in $t/freeze-after, after
# the test named there finished.
cat >"$t/l1run" <<'S'
#!/usr/bin/env bash
dir=$(dirname "$0")
[ "$1" = -- ] && shift
echo "$*" >>"$dir/calls"
stop=$(head -n1 "$dir/freeze-after" 2>/dev/null || true)
if [ -n "$stop" ]; then
    sed -i 1d "$dir/freeze-after"
    "$@" | sed "/\] $stop (/q"
    exit 123
fi
exec "$@"
S
# gtest stand-in: tests A B C D; FAIL names a failing test.
cat >"$t/fake_tests" <<'S'
#!/usr/bin/env bash
f=${1#--gtest_filter=}
neg=${f#*-}; [ "$neg" = "$f" ] && neg=
rc=0
for n in A B C D; do
    case ":$neg:" in *":$n:"*) continue ;; esac
    echo "[ RUN      ] $n"
    if [ "$n" = "${FAIL:-}" ]; then echo "[  FAILED  ] $n (1 ms)"; rc=1; else echo "[       OK ] $n (1 ms)"; fi
done
exit $rc
S
chmod +x "$t"/*
fail() { echo "FAIL: $*"; exit 1; }

# No freeze: one call, exit 0.
"$t/gtest-nested" -- "$t/fake_tests" >/dev/null 2>&1 || fail "clean run"
[ "$(wc -l <"$t/calls")" = 1 ] || fail "clean run made $(wc -l <"$t/calls") calls"

# Freeze after B: the second attempt runs only C and D.
: >"$t/calls"; echo B >"$t/freeze-after"
"$t/gtest-nested" -- "$t/fake_tests" >"$t/out" 2>&1 || fail "resume run failed: $(cat "$t/out")"
grep -q -- '--gtest_filter=\*-A:B$' "$t/calls" || fail "resume filter: $(cat "$t/calls")"
[ "$(grep -c '\] C (' "$t/out")" = 1 ] || fail "C ran more than once"

# A failure before a freeze fails the run even though the resumed attempt passes.
: >"$t/calls"; echo B >"$t/freeze-after"
rc=0; FAIL=A "$t/gtest-nested" -- "$t/fake_tests" >"$t/out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "failure before a freeze gave exit $rc"

# Too many freezes: 123.
: >"$t/calls"; printf 'A\nB\nC\nD\n' >"$t/freeze-after"
rc=0; VESSEL_L1_FREEZE_RETRIES=2 "$t/gtest-nested" -- "$t/fake_tests" >"$t/out" 2>&1 || rc=$?
[ "$rc" = 123 ] || fail "repeated freezes gave exit $rc"
[ "$(wc -l <"$t/calls")" = 3 ] || fail "expected 3 attempts, got $(wc -l <"$t/calls")"
echo "gtest-nested selftest: 4 checks passed"
