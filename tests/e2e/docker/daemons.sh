# Sourced by docker_e2e.sh and benchmarks/oci_bench.sh: a private Docker (Debian's dockerd
# and containerd) with vessel registered as the runtime "vessel", all state on tmpfs.
#   dk_start VESSEL_BIN WORKDIR   start both daemons (returns non-zero with their logs shown)
#   dk ARGS...                    the docker CLI against it
#   dk_stop                       remove containers, stop the daemons, unmount, delete
# Private sockets, exec root, data root and bridge: a Docker installed on the machine is not
# touched. Docker's iptables handling is off ("iptables": false, as measured in the harness);
# its default network is a bridge made here, DK_BRIDGE with DK_SUBNET.1/24.
DK_RUN=/run/vessel-dk  # short: unix socket paths below it must fit in sockaddr_un
DK_BRIDGE=vsldk0
DK_SUBNET=172.31.250
dk_work="" dk_dockerd_pid="" dk_containerd_pid="" dk_ip_forward=""

# Debian's client, of the daemon's version (another docker may come first in PATH).
DK_CLI=$(command -v /usr/bin/docker || command -v docker)
dk() { "$DK_CLI" -H "unix://$DK_RUN/docker.sock" "$@"; }

dk_stop_pid() {
    [[ -n $1 ]] || return 0
    kill "$1" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
}

dk_stop() {
    [[ -n $dk_work ]] || return 0
    if [[ -n $dk_dockerd_pid ]]; then
        local ids
        ids=$(dk ps -aq 2>/dev/null)
        [[ -z $ids ]] || dk rm -f $ids >/dev/null 2>&1
    fi
    dk_stop_pid "$dk_dockerd_pid"
    dk_stop_pid "$dk_containerd_pid"
    dk_dockerd_pid="" dk_containerd_pid=""
    local m
    for m in "$dk_work/docker" "$dk_work/containerd" "$DK_RUN"; do
        mountpoint -q "$m" && umount -R -l "$m"
    done
    ip link del "$DK_BRIDGE" 2>/dev/null
    [[ -z $dk_ip_forward ]] || echo "$dk_ip_forward" >/proc/sys/net/ipv4/ip_forward
    rm -rf "$DK_RUN"
}

dk_start() {  # vessel binary, work dir (kept: logs and configs; state goes on tmpfs)
    local vessel=$1
    dk_work=$2
    # State on tmpfs (in the harness the root is overlayfs, which overlay2 cannot sit on).
    mkdir -p "$dk_work/docker" "$dk_work/containerd" "$DK_RUN"
    mount -t tmpfs -o size=2g,mode=0711 vessel-dk "$dk_work/docker" &&
        mount -t tmpfs -o size=2g,mode=0711 vessel-ctrd "$dk_work/containerd" &&
        mount -t tmpfs -o mode=0711 vessel-dkrun "$DK_RUN" || return 1
    ip link add "$DK_BRIDGE" type bridge && ip addr add "$DK_SUBNET.1/24" dev "$DK_BRIDGE" &&
        ip link set "$DK_BRIDGE" up || { echo "cannot create bridge $DK_BRIDGE" >&2; return 1; }
    # Docker warns on every run without forwarding; set here (and restored) rather than by
    # dockerd ("ip-forward": false), so that the machine is left as it was.
    dk_ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)
    echo 1 >/proc/sys/net/ipv4/ip_forward
    cat >"$dk_work/containerd.toml" <<TOML
version = 2
root = "$dk_work/containerd/root"
state = "$DK_RUN/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$DK_RUN/containerd.sock"
[ttrpc]
  address = "$DK_RUN/containerd.sock.ttrpc"
[debug]
  address = "$DK_RUN/containerd-debug.sock"
TOML
    cat >"$dk_work/daemon.json" <<JSON
{
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "userland-proxy": false,
  "bridge": "$DK_BRIDGE",
  "storage-driver": "overlay2",
  "runtimes": {"vessel": {"path": "$vessel"}}
}
JSON
    containerd --config "$dk_work/containerd.toml" >"$dk_work/containerd.log" 2>&1 &
    dk_containerd_pid=$!
    for _ in $(seq 300); do [[ -S $DK_RUN/containerd.sock ]] && break; sleep 0.1; done
    dockerd --config-file "$dk_work/daemon.json" --containerd "$DK_RUN/containerd.sock" \
        --data-root "$dk_work/docker/root" --exec-root "$DK_RUN/docker" \
        -H "unix://$DK_RUN/docker.sock" --pidfile "$DK_RUN/docker.pid" \
        >"$dk_work/dockerd.log" 2>&1 &
    dk_dockerd_pid=$!
    for _ in $(seq 600); do dk version >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "dockerd did not come up" >&2
    tail -30 "$dk_work/containerd.log" "$dk_work/dockerd.log" >&2
    return 1
}
