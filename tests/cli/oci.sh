#!/usr/bin/env bash
# The OCI runtime CLI without a guest: global flags, runc's errors and exit codes for
# missing or bad containers and bundles, the JSON error log, and nothing left behind.
set -u
vessel=${1:?usage: oci.sh VESSEL_BIN}
tmp=$(mktemp -d /var/tmp/vessel-oci-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/state
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"

expect_out() {  # name, expected stdout, command...
    local name=$1 want=$2 out
    shift 2
    out=$("$@" 2>&1)
    if [[ $out == "$want" ]]; then pass=$((pass + 1)); else
        fail=$((fail + 1))
        echo "FAIL $name: got '$out', want '$want'"
    fi
}
v() { "$vessel" --root "$root" "$@"; }

expect_out list-empty-json null v list --format json
expect_out list-empty-quiet "" v list -q
expect state-missing 1 "container nope does not exist" v state nope
expect delete-missing 1 "container nope does not exist" v delete nope
expect_out delete-force-missing "" v delete --force nope
expect kill-missing 1 "container nope does not exist" v kill nope KILL
expect start-missing 1 "container nope does not exist" v start nope
expect exec-missing 1 "container nope does not exist" v exec nope true
expect pause-missing 1 "container nope does not exist" v pause nope
expect state-no-id 2 '"state" requires 1 argument(s)' v state
expect kill-too-many 2 '"kill" requires 1 to 2 argument(s)' v kill a b c
expect unknown-flag 2 "create: unknown option '--bogus'" v create --bogus x
expect unknown-global 2 "unknown global option '--bogus'" "$vessel" --bogus list
expect bad-log-format 2 "--log-format: 'xml' is not text or json" "$vessel" --log-format xml list
expect invalid-id 1 'invalid container id' v create -b "$tmp" 'a/b'
# checkpoint/restore: podman asks `checkpoint --help` whether the runtime can.
expect_out checkpoint-help-exits-0 0 sh -c "'$vessel' checkpoint --help >/dev/null; echo \$?"
expect checkpoint-missing 1 "container nope does not exist" v checkpoint --image-path "$tmp/ck" nope
expect checkpoint-no-image-path 2 "checkpoint: --image-path DIR is required" v checkpoint nope
expect checkpoint-pre-dump 1 "--pre-dump/--parent-path are not supported" v checkpoint --image-path "$tmp/ck" --pre-dump nope
expect restore-no-checkpoint 1 "no checkpoint in $tmp/nock" v restore --image-path "$tmp/nock" -b "$tmp" -d r1
mkdir -p "$tmp/badck" && echo '{"format":"criu"}' >"$tmp/badck/inventory.img"
expect restore-foreign-checkpoint 1 "is not a vessel checkpoint" v restore --image-path "$tmp/badck" -b "$tmp" -d r1
expect restore-lazy-pages 1 "--lazy-pages is not supported" v restore --image-path "$tmp/badck" --lazy-pages r1
expect_out restore-leaves-nothing "" v list -q
# The global flags podman passes are accepted.
expect_out podman-globals null "$vessel" --root "$root" --log "$tmp/l.json" --log-format json --systemd-cgroup list --format json
# Errors also go to --log as runc's JSON lines.
v --log "$tmp/log.json" --log-format json state ghost 2>/dev/null
if python3 -c 'import json,sys; l=json.loads(open(sys.argv[1]).readline()); assert l["level"]=="error" and l["msg"]=="container ghost does not exist" and l["time"].endswith("Z")' "$tmp/log.json"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL json-log: $(cat "$tmp/log.json")"
fi
v --log "$tmp/log.txt" state ghost 2>/dev/null
grep -q 'level=error msg="container ghost does not exist"' "$tmp/log.txt" && pass=$((pass + 1)) || {
    fail=$((fail + 1)); echo "FAIL text-log: $(cat "$tmp/log.txt")"; }

# Bundle errors: clear message, exit 1, no state left.
expect bundle-missing 1 "bundle $tmp/nob: No such file or directory" v create -b "$tmp/nob" c1
mkdir -p "$tmp/b/rootfs/bin"
# create looks the process up in the rootfs, as runc does.
printf '#!/bin/sh\n' > "$tmp/b/rootfs/bin/true" && chmod +x "$tmp/b/rootfs/bin/true"
echo '{bad' > "$tmp/b/config.json"
expect bundle-bad-json 1 "config.json: not valid JSON" v create -b "$tmp/b" c1
cat > "$tmp/b/config.json" <<'JSON'
{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"},"root":{"path":"nosuch"}}
JSON
expect bundle-no-rootfs 1 "rootfs $tmp/b/nosuch" v create -b "$tmp/b" c1
cat > "$tmp/b/config.json" <<'JSON'
{"ociVersion":"1.0.2","process":{"terminal":true,"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}
JSON
expect tty-without-console 1 "cannot allocate tty" v create -b "$tmp/b" c1
cat > "$tmp/b/config.json" <<'JSON'
{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}
JSON
expect console-without-tty 1 "console socket provided but process.terminal is false" v create -b "$tmp/b" --console-socket "$tmp/cs" c1
expect preserve-fds 1 "--preserve-fds" v create -b "$tmp/b" --preserve-fds 2 c1
cat > "$tmp/b/config.json" <<'JSON'
{"ociVersion":"1.0.2","process":{"args":["nosuch"],"cwd":"/"},"root":{"path":"rootfs"}}
JSON
expect missing-binary 1 'exec: "nosuch": executable file not found in $PATH' v create -b "$tmp/b" c1
cat > "$tmp/b/config.json" <<'JSON'
{"ociVersion":"1.0.2","process":{"args":["/bin/nosuch"],"cwd":"/"},"root":{"path":"rootfs"}}
JSON
expect missing-binary-path 1 'exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory' v create -b "$tmp/b" c1
cat > "$tmp/b/config.json" <<'JSON'
{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}
JSON
# A VM that cannot boot (no kernel): the error names it and nothing is left.
VESSEL_KERNEL=/nonexistent/vmlinux expect no-kernel 1 "/nonexistent/vmlinux" v create -b "$tmp/b" c1
expect_out nothing-left "" v list -q
if compgen -G "$root/*" >/dev/null; then fail=$((fail + 1)); echo "FAIL leftovers: $(ls -A "$root")"; else pass=$((pass + 1)); fi

expect_out features-version '"1.0.0"' sh -c "'$vessel' features | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[\"ociVersionMin\"]))'"
"$vessel" --version | grep -q "^vessel version" && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL version"; }

echo "pass=$pass fail=$fail"
[[ $fail == 0 ]]
