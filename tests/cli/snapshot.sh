#!/usr/bin/env bash
# Bad input to `vessel snapshot` and `vessel restore`: a clear message, a non-zero exit,
# nothing started and nothing left behind. No KVM needed: every case is refused before a VM
# would be created.
set -u
vessel=${1:?usage: snapshot.sh VESSEL_BIN}
tmp=$(mktemp -d /var/tmp/vessel-cli-snap-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"
export VESSEL_SNAPSHOT_DIR=$tmp/store VESSEL_RUNTIME_DIR=$tmp/run

expect restore-no-dir 2 "no snapshot directory given" "$vessel" restore
expect restore-missing 1 "snapshot $tmp/nope: No such file or directory" "$vessel" restore "$tmp/nope"
mkdir -p "$tmp/empty"
expect restore-not-a-snapshot 1 "cannot open $tmp/empty/state.vsnap" "$vessel" restore "$tmp/empty"
mkdir -p "$tmp/garbage" && head -c 100 /dev/urandom > "$tmp/garbage/state.vsnap"
expect restore-garbage 1 "not a vessel snapshot" "$vessel" restore "$tmp/garbage"
mkdir -p "$tmp/short" && printf 'VESSNAP\0' > "$tmp/short/state.vsnap"
expect restore-truncated 1 "truncated" "$vessel" restore "$tmp/short"
# A well-formed header with a bad checksum.
mkdir -p "$tmp/badcrc" && { printf 'VESSNAP\0\001\0\0\0\0\0\0\0'; head -c 16 /dev/zero; } > "$tmp/badcrc/state.vsnap"
expect restore-bad-header 1 "header corrupted" "$vessel" restore "$tmp/badcrc"
expect restore-unknown-option 2 "unknown option '--bogus'" "$vessel" restore --bogus "$tmp/empty"
expect restore-uffd-copy 2 "--uffd and --copy-memory exclude each other" "$vessel" restore --uffd --copy-memory "$tmp/empty"
expect restore-ws-record-ms 2 "--ws-record-ms wants milliseconds" "$vessel" restore --uffd --ws-record-ms 5s "$tmp/empty"
expect restore-cmd-needs-agent 2 "a command needs --agent" "$vessel" restore "$tmp/empty" -- true
expect restore-tty-needs-cmd 2 "--tty: no command given" "$vessel" restore --agent -t "$tmp/empty"
expect restore-bad-hostname 2 "--hostname: identity field \"hostname\"" "$vessel" restore --hostname "a b" "$tmp/empty"
expect restore-bad-net 2 "--net 'network=': " "$vessel" restore --net network= "$tmp/empty"
expect restore-bad-cid 2 "--cid: 2 is reserved" "$vessel" restore --cid 2 "$tmp/empty"
expect create-no-vm 1 "no running VM 'ghost'" "$vessel" snapshot create ghost "$tmp/s1"
check create-left-nothing test ! -e "$tmp/s1"
expect create-usage 2 "expected ID DIR" "$vessel" snapshot create onlyone
expect snapshot-unknown 2 "unknown subcommand 'frob'" "$vessel" snapshot frob
expect rm-not-a-snapshot 1 "is not a vessel snapshot" "$vessel" snapshot rm "$tmp/empty"
check rm-kept-other-dir test -d "$tmp/empty"
# ls lists the store, marking what is damaged; rm removes a damaged one too.
mkdir -p "$tmp/store" && cp -r "$tmp/garbage" "$tmp/store/broken"
out=$("$vessel" snapshot ls 2>&1)
check ls-marks-invalid grep -q "broken.*invalid: .*not a vessel snapshot" <<<"$out"
check rm-damaged "$vessel" snapshot rm broken
check rm-removed test ! -e "$tmp/store/broken"

echo "snapshot CLI: $pass passed, $fail failed"
[[ $fail == 0 ]]
