#!/usr/bin/env bash
# Runs every test: unit, KVM (freestanding guests on this host's KVM) and end-to-end (the real
# guest kernel; inside the nested harness on PVM hosts), in a normal and an ASan/UBSan build,
# plus the clang-format check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/build.sh RelWithDebInfo build
bash scripts/build.sh Asan build-asan

status=0
echo "== tests (RelWithDebInfo)"
ctest --test-dir build --output-on-failure || status=1
# The podman and Docker acceptance runs (label "containers", ~25 min in the harness) run once,
# in the first build: under ASan they would double CI's time. The OCI CLI's own code runs
# under ASan in oci_cli, and the VMM's in the e2e suite.
echo "== tests (ASan/UBSan)"
ctest --test-dir build-asan --output-on-failure -LE containers || status=1
if [[ $status != 0 ]]; then
    # CI keeps only the end of the log: repeat what failed, and where, last.
    echo "== failures"
    for b in build build-asan; do
        log=$b/Testing/Temporary/LastTest.log
        [[ -f $log ]] || continue
        grep -E '^\[  FAILED  \]|^FAIL |^[^ ]*\.(cc|c|h):[0-9]+: Failure|^Expected|^  Actual|Which is|^Value of' "$log" |
            tail -40 | sed "s|^|$b: |"
    done
fi
exit $status
