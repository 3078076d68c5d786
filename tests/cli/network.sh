#!/usr/bin/env bash
# `vessel network`: exit codes, messages naming the problem, and nothing left behind (bridges,
# nft tables, state files). Runs itself inside a fresh network namespace (`unshare -n`) with a
# temporary state directory, so the host's network and /var/lib/vessel are never touched.
set -u
vessel=${1:?usage: network.sh VESSEL_BIN}
if [[ ${VESSEL_NETNS_TEST:-} != 1 ]]; then
    if ! unshare -n true 2>/dev/null; then
        echo "network.sh: needs root for unshare -n; skipped"
        exit 77
    fi
    VESSEL_NETNS_TEST=1 exec unshare -n "$0" "$@"
fi
ip link set lo up
tmp=$(mktemp -d /var/tmp/vessel-cli-net-XXXXXX)
trap 'kill "${holder:-}" 2>/dev/null; rm -rf "$tmp"' EXIT
export VESSEL_STATE_DIR=$tmp/state
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"


bridges() { ip -o link show type bridge | awk -F': ' '{print $2}' | sort | tr '\n' ' '; }
tables() { nft list tables | sort | tr '\n' ' '; }
states() { (cd "$VESSEL_STATE_DIR/networks" 2>/dev/null && ls) | tr '\n' ' '; }

# Usage errors: exit 2.
expect no-subcommand 2 "usage: vessel network" "$vessel" network
expect unknown-subcommand 2 "unknown command 'frob'" "$vessel" network frob
expect create-no-subnet 2 "--subnet CIDR is required" "$vessel" network create n1
expect create-no-name 2 "missing NAME" "$vessel" network create --subnet 10.50.0.0/24
expect create-bad-option 2 "unknown option '--colour'" "$vessel" network create --colour x n1
expect ls-bad-format 2 "--format must be table or json" "$vessel" network ls --format yaml
expect rm-no-name 2 "need NAME" "$vessel" network rm

# Bad values: exit 1, naming the value.
expect invalid-cidr 1 "invalid CIDR '10.50.0.0/33'" "$vessel" network create --subnet 10.50.0.0/33 n1
expect not-cidr 1 "invalid CIDR 'lan'" "$vessel" network create --subnet lan n1
expect host-bits 1 "host bits are set (did you mean 10.50.0.0/24?)" "$vessel" network create --subnet 10.50.0.9/24 n1
expect too-small 1 "subnet 10.50.0.0/31 is too small" "$vessel" network create --subnet 10.50.0.0/31 n1
expect bad-name 1 "invalid network name 'a/b'" "$vessel" network create --subnet 10.50.0.0/24 a/b
expect bad-dns 1 "invalid IPv4 address 'dns.example'" "$vessel" network create --subnet 10.50.0.0/24 --dns dns.example n1
expect bad-bridge 1 "invalid bridge name 'averyveryverylongbridge'" "$vessel" network create --subnet 10.50.0.0/24 --bridge averyveryverylongbridge n1
check nothing-after-bad-values [ "$(bridges)$(tables)$(states)" == "" ]

# A network: bridge with the gateway address, NAT table, state.
expect create 0 "" "$vessel" network create --subnet 10.50.0.0/24 --dns 10.50.0.53 net1
check bridge-made [ "$(bridges)" == "vsl-net1 " ]
check gateway-address ip -4 -o addr show dev vsl-net1 | grep -q "inet 10.50.0.1/24"
check nat-table nft list table ip vessel-net1 | grep -q 'ip saddr 10.50.0.0/24 oifname != "vsl-net1" masquerade'
check ip-forward [ "$(cat /proc/sys/net/ipv4/ip_forward)" == 1 ]

# Conflicts: exit 1, nothing created.
ip addr add 192.168.77.1/24 dev lo
ip route add blackhole 172.30.0.0/16
ip link add vsl-taken type bridge
expect duplicate 1 "network 'net1' already exists" "$vessel" network create --subnet 10.51.0.0/24 net1
expect overlap-network 1 "subnet 10.50.0.0/16 overlaps network 'net1' (10.50.0.0/24)" "$vessel" network create --subnet 10.50.0.0/16 n2
expect overlap-address 1 "overlaps address 192.168.77.1/24 on host interface lo" "$vessel" network create --subnet 192.168.77.0/24 n2
expect overlap-route 1 "overlaps host route 172.30.0.0/16" "$vessel" network create --subnet 172.30.1.0/24 n2
expect bridge-exists 1 "bridge vsl-taken already exists" "$vessel" network create --subnet 10.52.0.0/24 --bridge vsl-taken n2
check existing-bridge-kept [ "$(bridges)" == "vsl-net1 vsl-taken " ]
check no-table-from-failures [ "$(tables)" == "table ip vessel-net1 " ]
check no-state-from-failures [ "$(states)" == "net1.json " ]
ip link del vsl-taken

# Rollback: the record cannot be written (its path is a directory) after bridge and table
# were made; both go again.
mkdir "$VESSEL_STATE_DIR/networks/roll.json"
expect rollback 1 "roll.json" "$vessel" network create --subnet 10.53.0.0/24 roll
check rollback-bridge [ "$(bridges)" == "vsl-net1 " ]
check rollback-table [ "$(tables)" == "table ip vessel-net1 " ]
rmdir "$VESSEL_STATE_DIR/networks/roll.json"

# Listing.
ls_out=$("$vessel" network ls)
check ls-table grep -Eq '^net1 +10\.50\.0\.0/24 +vsl-net1 +10\.50\.0\.1 +0$' <<<"$ls_out"
json=$("$vessel" network ls --format json)
check ls-json grep -q '"leases_in_use": 0' <<<"$json"
check ls-json-subnet grep -q '"subnet": "10.50.0.0/24"' <<<"$json"
check inspect "$vessel" network inspect net1 >/dev/null
expect inspect-missing 1 "network 'nope' not found" "$vessel" network inspect nope

# In use: a lease held by a live process (what a running VMM records) blocks rm; once that
# process is gone (killed, never released) the lease is reclaimed.
sleep 300 &
holder=$!
start=$(sed 's/.*) //' "/proc/$holder/stat" | cut -d' ' -f20)
lease='{"ip": "10.50.0.2", "mac": "02:76:0a:32:00:02", "tap": "vsl-tap0", "pid": '$holder', "start_time": '$start', "label": "", "created": 0}'
sed -i "s/\"leases\": \[\]/\"leases\": [$lease]/" "$VESSEL_STATE_DIR/networks/net1.json"
check ls-counts-live-lease grep -Eq '^net1 .* 1$' <<<"$("$vessel" network ls)"
expect rm-in-use 1 "network 'net1' is in use by 1 VM(s) (pid $holder)" "$vessel" network rm net1
check in-use-kept [ "$(bridges)$(tables)$(states)" == "vsl-net1 table ip vessel-net1 net1.json " ]
kill -9 "$holder"
wait "$holder" 2>/dev/null
check ls-drops-dead-lease grep -Eq '^net1 .* 0$' <<<"$("$vessel" network ls)"
expect rm-missing 1 "network 'nope' not found" "$vessel" network rm nope
expect rm 0 "" "$vessel" network rm net1
check rm-cleans [ "$(bridges)$(tables)$(states)" == "" ]

echo "cli-network: $pass passed, $fail failed"
((fail == 0))
