#!/usr/bin/env bash
# A real single-node Kubernetes v1.20 for the tests, inside a network namespace.
#
#   cluster.sh build                 fetch + build everything (cached in .cache/kube)
#   cluster.sh start DIR             the whole node; returns when the node is Ready and
#                                    every workload pod Running (fails after 2 min with
#                                    the components' log tails, host restored)
#   cluster.sh stop DIR              stop it all and leave the host as found
#   cluster.sh status DIR            what runs
#   cluster.sh exec DIR CMD...       CMD in the cluster's network namespace
#   cluster.sh kubectl DIR ARGS...   kubectl v1.20.2 as admin, in the namespace
#   cluster.sh import DIR REPO TAR   an OCI archive (images/oci.py's, tagged T) into
#                                    containerd's k8s.io namespace as REPO:T
#   cluster.sh restart DIR NAME      stop and start one component (kubelet, containerd,
#                                    kube-apiserver, kube-scheduler, ...-controller-manager)
#   cluster.sh host-state DIR        what `stop` must leave as `start` found it (text,
#                                    for a before/after diff: make cluster-test)
#
# What runs (all built or unpacked from Debian bookworm, nothing installed):
#   etcd + kube-apiserver     control-plane/hack/kube-apiserver.sh (its pki, tokens)
#   kube-controller-manager, kube-scheduler, kubelet, kubectl  built by the same
#                             script from Debian's kubernetes source (build-node)
#   containerd, runc, CNI plugins  Debian's packages, `dpkg -x` into .cache/kube/node
#   images                    localhost/pause:kscope (hack/cluster/pause.c, static) and
#                             localhost/busybox:kscope (busybox-static), OCI archives
#                             written by hack/cluster/images.py with images/oci.py, no
#                             registry
#   kube-proxy                built like the others; iptables mode, Debian's iptables
#                             (legacy) unpacked, rules only in the namespace
#   cluster DNS               Debian's dnsmasq on the node IP, answering cluster.local
#                             from the Services (hack/cluster/dns.py writes its hosts
#                             file; CoreDNS is in no registry here), nothing else
#   workload                  hack/cluster/workload.yaml
#
# What it owns on the host, and gives back at `stop` (and when `start` fails):
#   - the network namespace kscope-<id> (<id>: a hash of DIR): loopback, a veth pair
#     carrying the node IP (the kubelet refuses a loopback node IP) and the pods'
#     bridge; no route leads out of it. Every component runs in it (nsenter --net
#     only: `ip netns exec` would also remount /sys, hiding the cgroup hierarchies).
#   - the cgroup kscope-<id> in every v1 hierarchy: every process started here joins
#     it in `pids`, and the kubelet's --cgroup-root puts the pods below it, so `stop`
#     finds every PID (containerd's shims, containers) there, not by name.
#   - mounts, all under DIR (kubelet volumes, containerd rootfs/shm/netns).
#   - the host sysctls the kubelet rewrites (vm.overcommit_memory, kernel.panic, ...),
#     saved in DIR before it starts and restored.
#   - host paths that the kubelet and containerd write whatever their configuration
#     (/var/log/pods, /run/containerd/s, /var/lib/cni, ...): what is new is removed.
# `start` first undoes whatever a crashed run left (the saved state is in DIR).
#
# DIR/env (KEY=VALUE, removed at stop) tells tests where things are; kubectl there
# wants --kubeconfig $KUBECONFIG --cache-dir $KUBECTL_CACHE_DIR (not ~/.kube/cache). DIR must be an absolute-able path
# without whitespace, short enough for unix sockets (< 70 characters).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export KUBE_CACHE=${KUBE_CACHE:-$REPO/.cache/kube}
APISERVER_SH=$REPO/control-plane/hack/kube-apiserver.sh
BIN=$KUBE_CACHE/bin
NODE_ROOT=$KUBE_CACHE/node/root
# iptables (legacy, for kube-proxy) and dnsmasq (the cluster's DNS) with the libraries
# they link that a minimal Debian may lack; run with LD_LIBRARY_PATH, not installed.
NODE_PKGS=(containerd runc containernetworking-plugins busybox-static
    iptables libip4tc2 libip6tc2 libxtables12 libnftnl11 libnetfilter-conntrack3
    libnfnetlink0 libmnl0 dnsmasq-base libnftables1 libjansson4 libdbus-1-3)
# kube-proxy finds `iptables` on its PATH: links to the unpacked multi-call binary.
NODE_TOOLS=$KUBE_CACHE/node/bin
NODE_LIBS=$NODE_ROOT/usr/lib/x86_64-linux-gnu
IMAGES=$KUBE_CACHE/images
WORKLOAD=$HERE/cluster/workload.yaml

NODE_NAME=scope-node
NODE_IP=10.250.0.2
POD_SUBNET=10.251.0.0/24
API_PORT=6443
KUBELET_PORT=10250
PAUSE_IMAGE=localhost/pause:kscope
BUSYBOX_IMAGE=localhost/busybox:kscope
READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-120}
# The six sysctls kubelet 1.20's container manager sets (setupKernelTunables,
# pkg/kubelet/cm), all global: a network namespace does not scope them.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Written by the kubelet or containerd outside their configured directories
# (/var/log/pods is a constant in kubelet 1.20; shims' sockets under /run/containerd/s;
# libcni's result cache; the flexvolume dir is probed before the config applies).
# (/run/xtables.lock: iptables' lock, moved into DIR by XTABLES_LOCKFILE; listed in case.)
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/cni /run/containerd
    /var/lib/kubelet /var/lib/containerd /opt/containerd /etc/cni /opt/cni
    /usr/libexec/kubernetes /run/xtables.lock)
COMPONENTS=(containerd kubelet kube-controller-manager kube-scheduler kube-proxy dnsmasq cluster-dns)
# kube-apiserver.sh's --service-cluster-ip-range, and the `kubernetes` Service's IP.
SERVICE_SUBNET=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
# kubeadm's default issuer, the one deploy/base/kubelet-proxy.yaml ships with.
SA_ISSUER=https://kubernetes.default.svc.cluster.local

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

# --- fetch and build (cached) ------------------------------------------------------

fetch_node() {
    [ -x "$NODE_ROOT/usr/bin/containerd" ] && [ -x "$NODE_ROOT/usr/sbin/runc" ] &&
        [ -x "$NODE_ROOT/usr/lib/cni/bridge" ] && [ -x "$NODE_ROOT/bin/busybox" ] &&
        [ -x "$NODE_ROOT/usr/sbin/xtables-legacy-multi" ] && [ -x "$NODE_ROOT/usr/sbin/dnsmasq" ] &&
        [ -x "$NODE_TOOLS/iptables" ] && return 0
    mkdir -p "$KUBE_CACHE/node/debs"
    log "apt-get download ${NODE_PKGS[*]}"
    (cd "$KUBE_CACHE/node/debs" && { apt-get download -qq "${NODE_PKGS[@]}" 2>/dev/null ||
        { apt-get update -qq && apt-get download -qq "${NODE_PKGS[@]}"; }; })
    rm -rf "$NODE_ROOT.tmp"
    for deb in "$KUBE_CACHE"/node/debs/*.deb; do dpkg -x "$deb" "$NODE_ROOT.tmp"; done
    rm -rf "$NODE_ROOT" && mv "$NODE_ROOT.tmp" "$NODE_ROOT"
    rm -rf "$NODE_TOOLS" && mkdir -p "$NODE_TOOLS"
    local t
    for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -s "$NODE_ROOT/usr/sbin/xtables-legacy-multi" "$NODE_TOOLS/$t"
    done
}

# The two images, rebuilt when their sources change (a second or two).
build_images() {
    mkdir -p "$IMAGES"
    local src
    for src in "$HERE/cluster/pause.c" "$HERE/cluster/images.py" "$REPO/images/oci.py"; do
        [ "$src" -nt "$IMAGES/busybox.tar" ] && rm -f "$IMAGES/busybox.tar"
    done
    [ -s "$IMAGES/busybox.tar" ] && [ -s "$IMAGES/pause.tar" ] && return 0
    gcc -static -O2 -o "$IMAGES/pause" "$HERE/cluster/pause.c"
    python3 "$HERE/cluster/images.py" --pause "$IMAGES/pause" --busybox "$NODE_ROOT/bin/busybox" \
        --out "$IMAGES"
}

build() {
    "$APISERVER_SH" build-node # takes its own lock on the cache
    mkdir -p "$KUBE_CACHE"
    (
        flock 9
        fetch_node
        build_images
    ) 9>"$KUBE_CACHE/.cluster-build.lock"
}

# --- names derived from DIR, so that `stop` needs nothing `start` wrote -------------

names() {
    [ -n "${1:-}" ] || die "usage: cluster.sh start|stop|status DIR"
    case "$1" in *[[:space:]]*) die "DIR must not contain whitespace: $1" ;; esac
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    [ ${#DIR} -lt 70 ] || die "DIR too long for unix sockets: $DIR"
    ID=$(echo -n "$DIR" | sha256sum | cut -c1-8)
    NETNS=kscope-$ID
    CGROUP=kscope-$ID
    SOCK=$DIR/containerd/containerd.sock
    STATE=$DIR/host # what start found, for stop to restore
}

in_netns() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

# spawn NAME CMD...: CMD in the background in the cluster's cgroup and namespace, its
# output in DIR/logs/NAME.log and its PID (exec all the way) in DIR/pids/NAME.pid;
# the command line in DIR/pids/NAME.argv, for `restart`.
spawn() {
    local name=$1
    shift
    printf '%s\0' "$@" >"$DIR/pids/$name.argv"
    # shellcheck disable=SC2016 # $$ and $0.. are the inner shell's
    bash -c 'echo $$ >"$0" && exec nsenter --net="$1" -- "${@:2}"' \
        "/sys/fs/cgroup/pids/$CGROUP/cgroup.procs" "/run/netns/$NETNS" "$@" \
        >>"$DIR/logs/$name.log" 2>&1 &
    echo $! >"$DIR/pids/$name.pid"
}

# The same in the foreground (the apiserver script: its background children stay).
in_cluster() {
    # shellcheck disable=SC2016
    bash -c 'echo $$ >"$0" && exec nsenter --net="$1" -- "${@:2}"' \
        "/sys/fs/cgroup/pids/$CGROUP/cgroup.procs" "/run/netns/$NETNS" "$@"
}

# kubectl as admin, its discovery cache in DIR (not ~/.kube/cache)
kubectl_() { in_netns "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" --cache-dir "$DIR/kubectl-cache" "$@"; }

# --- the host: saved before, restored after ---------------------------------------

cgroup_hierarchies() { # every mounted cgroup v1/v2 hierarchy
    awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

save_host() {
    mkdir -p "$STATE"
    if [ ! -f "$STATE/sysctls" ]; then # never overwrite what a crashed run saved
        for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$STATE/sysctls.tmp"
        mv "$STATE/sysctls.tmp" "$STATE/sysctls"
    fi
    for p in "${HOST_PATHS[@]}" /run/netns; do
        local f
        f=$STATE/paths$(echo "$p" | tr / _)
        [ -f "$f" ] && continue
        if [ -e "$p" ]; then find "$p" -mindepth 1 -xdev | LC_ALL=C sort >"$f.tmp"; else echo ABSENT >"$f.tmp"; fi
        mv "$f.tmp" "$f"
    done
}

restore_host_paths() {
    for p in "${HOST_PATHS[@]}"; do
        local f
        f=$STATE/paths$(echo "$p" | tr / _)
        [ -f "$f" ] || continue
        if [ "$(cat "$f")" = ABSENT ]; then
            rm -rf --one-file-system "$p"
        elif [ -e "$p" ]; then
            # entries that appeared since start, deepest first
            find "$p" -mindepth 1 -xdev | LC_ALL=C sort | LC_ALL=C comm -13 "$f" - |
                sort -r | while read -r e; do rm -rf --one-file-system "$e"; done
        fi
        rm -f "$f"
    done
}

restore_sysctls() {
    [ -f "$STATE/sysctls" ] || return 0
    local line
    while read -r line; do
        if [ "$(sysctl -n "${line%%=*}")" != "${line#*=}" ]; then
            sysctl -q -w "$line" >/dev/null
        fi
    done <"$STATE/sysctls"
    rm -f "$STATE/sysctls"
}

make_netns() {
    ip netns add "$NETNS"
    ip -n "$NETNS" link set lo up
    # The node's address on a veth pair inside the namespace (this kernel has no
    # dummy interfaces); both ends up, so the address is on a link with carrier.
    ip -n "$NETNS" link add node0 type veth peer name node0-peer
    ip -n "$NETNS" addr add "$NODE_IP/24" dev node0
    ip -n "$NETNS" link set node0 up
    ip -n "$NETNS" link set node0-peer up
    # Services' ClusterIPs need a route for the node's own connections to reach
    # kube-proxy's DNAT (the route is looked up before the OUTPUT chain); as the
    # veth's peer is in the namespace too, still nothing leads out.
    ip -n "$NETNS" route add "$SERVICE_SUBNET" dev node0
}

make_cgroups() {
    local h
    for h in $(cgroup_hierarchies); do
        mkdir -p "$h/$CGROUP"
        if [ -f "$h/cpuset.cpus" ]; then # a new cpuset is empty: inherit the parent's
            cat "$h/cpuset.cpus" >"$h/$CGROUP/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h/$CGROUP/cpuset.mems"
        fi
    done
}

# PIDs in the cluster's cgroup tree (pids hierarchy).
cluster_pids() {
    local root=/sys/fs/cgroup/pids/$CGROUP
    [ -d "$root" ] || return 0
    find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

# Mount points at or under DIR, innermost (latest) first.
dir_mounts() {
    awk -v d="$DIR" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' \
        /proc/self/mountinfo | tac
}

# stop_pid SECONDS PIDFILE...: TERM to all at once, KILL after SECONDS. A PID is
# signalled only while it is in the cluster's cgroup: after a crash or a reboot, a
# PID file may name someone else's process.
stop_pid() {
    local grace=$1 f pid pids=() left
    shift
    for f in "$@"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        rm -f "$f"
        if grep -qE "^[0-9]+:pids:/$CGROUP(/|\$)" "/proc/$pid/cgroup" 2>/dev/null; then pids+=("$pid"); fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq $((grace * 10))); do
        left=$(ps -o pid= -p "$(IFS=,; echo "${pids[*]}")" || true)
        [ -n "$left" ] || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null || true
}

# Everything start made, in reverse; safe to run on a half-started or crashed run.
teardown() {
    # the kubelet first (it would restart containers), then the rest at once, etcd
    # last (an apiserver without it does not finish its shutdown). The state is
    # thrown away at the next start: no more than 3 s of grace for any of them.
    stop_pid 10 "$DIR/pids/kubelet.pid"
    stop_pid 3 "$DIR"/pids/*.pid "$DIR"/apiserver/main.pid
    stop_pid 3 "$DIR"/apiserver/*.pid
    # what is left: shims and containers (and anything of a crashed run)
    local pids round
    for round in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(cluster_pids)
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        if [ "$round" = 1 ]; then kill $pids 2>/dev/null || true; else kill -9 $pids 2>/dev/null || true; fi
        sleep 0.5
    done
    [ -z "$(cluster_pids)" ] || die "processes left in cgroup $CGROUP: $(cluster_pids | tr '\n' ' ')"

    local m
    for round in 1 2 3 4 5; do
        [ -n "$(dir_mounts)" ] || break
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done < <(dir_mounts)
    done
    [ -z "$(dir_mounts)" ] || die "mounts left under $DIR: $(dir_mounts | tr '\n' ' ')"

    local h
    for h in $(cgroup_hierarchies); do
        [ -d "$h/$CGROUP" ] || continue
        for round in 1 2 3 4 5; do
            find "$h/$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$h/$CGROUP" ] || break
            sleep 0.2
        done
        [ ! -d "$h/$CGROUP" ] || die "cannot remove cgroup $h/$CGROUP"
    done

    if [ -e "/run/netns/$NETNS" ]; then ip netns del "$NETNS"; fi
    # `ip netns add` made /run/netns (a shared bind mount of itself) if it was absent
    if [ "$(cat "$STATE/paths_run_netns" 2>/dev/null)" = ABSENT ] && [ -d /run/netns ] &&
        [ -z "$(ls -A /run/netns)" ]; then
        while mountpoint -q /run/netns; do umount /run/netns; done
        rmdir /run/netns
    fi
    rm -f "$STATE/paths_run_netns"
    restore_host_paths
    restore_sysctls
    rm -f "$DIR/env" # no test may take a stopped cluster for a running one
}

# --- configuration files ------------------------------------------------------------

kubeconfig() { # kubeconfig FILE TOKEN
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kscope
  cluster: {server: "https://$NODE_IP:$API_PORT", certificate-authority: "$DIR/apiserver/ca.crt"}
users:
- name: user
  user: {token: "$2"}
contexts:
- name: kscope
  context: {cluster: kscope, user: user}
current-context: kscope
EOF
}

# cert NAME EKU CN [SAN] [O]: a key and certificate in DIR/pki, signed by the test CA.
cert() {
    local out=$DIR/pki/$1 subj="/CN=$3"
    [ -z "${5:-}" ] || subj="/O=$5$subj"
    openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$out.key" -out "$out.csr" 2>/dev/null
    { echo "basicConstraints=CA:FALSE"; echo "extendedKeyUsage=$2"; [ -z "${4:-}" ] || echo "subjectAltName=$4"; } >"$out.ext"
    openssl x509 -req -in "$out.csr" -CA "$DIR/apiserver/ca.crt" -CAkey "$DIR/apiserver/ca.key" \
        -CAcreateserial -days 2 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
}

write_configs() {
    mkdir -p "$DIR/pki" "$DIR/containerd" "$DIR/cni/net.d" "$DIR/kubelet"
    local t
    for t in node scheduler controller-manager kube-proxy; do openssl rand -hex 16 >"$DIR/pki/$t.token"; done
    # the components' identities, next to the admin-token of kube-apiserver.sh's pki
    {
        echo "$(cat "$DIR/pki/node.token"),system:node:$NODE_NAME,10,\"system:nodes\""
        echo "$(cat "$DIR/pki/scheduler.token"),system:kube-scheduler,11"
        echo "$(cat "$DIR/pki/controller-manager.token"),system:kube-controller-manager,12"
        echo "$(cat "$DIR/pki/kube-proxy.token"),system:kube-proxy,13"
    } >>"$DIR/apiserver/tokens.csv"
    kubeconfig "$DIR/admin.kubeconfig" admin-token
    kubeconfig "$DIR/kubelet/kubeconfig" "$(cat "$DIR/pki/node.token")"
    kubeconfig "$DIR/pki/scheduler.kubeconfig" "$(cat "$DIR/pki/scheduler.token")"
    kubeconfig "$DIR/pki/controller-manager.kubeconfig" "$(cat "$DIR/pki/controller-manager.token")"
    kubeconfig "$DIR/pki/kube-proxy.kubeconfig" "$(cat "$DIR/pki/kube-proxy.token")"
    # the kubelet's serving certificate names the node IP, so clients can verify it
    cert kubelet serverAuth "system:node:$NODE_NAME" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME"
    # the apiserver's client certificate towards the kubelet (logs, exec, proxy)
    cert apiserver-kubelet-client clientAuth kube-apiserver-kubelet-client "" system:masters

    cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # the kubelet's --pod-infra-container-image does not reach a remote runtime
  sandbox_image = "$PAUSE_IMAGE"
  # this VM withholds CAP_SYS_RESOURCE: without it every sandbox fails in runc
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$NODE_ROOT/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$NODE_ROOT/usr/sbin/runc"
        Root = "$DIR/containerd/runc"
        SystemdCgroup = false
EOF

    cat >"$DIR/cni/net.d/10-kscope.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "kscope", "plugins": [
  {"type": "bridge", "bridge": "kscope0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"}}]}
EOF

    cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $DIR/pki/kubelet.crt
tlsPrivateKeyFile: $DIR/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true, cacheTTL: 10s}
  x509: {clientCAFile: $DIR/apiserver/ca.crt}
authorization:
  mode: Webhook
  webhook: {cacheAuthorizedTTL: 10s, cacheUnauthorizedTTL: 10s}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
makeIPTablesUtilChains: false
failSwapOn: false
oomScoreAdj: 0
volumePluginDir: $DIR/kubelet/volume-plugins
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
# a shared CI disk must not make the kubelet evict pods or delete the local images
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
}

# --- start ------------------------------------------------------------------------

wait_for() { # wait_for SECONDS WHAT CMD...: poll CMD until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what: not ready in time"
        sleep 0.3
    done
}

# Ready: the node Ready, every Deployment and DaemonSet of the workload available,
# and every pod of the cluster Running.
cluster_ready() {
    kubectl_ get nodes,deployments,daemonsets,pods -A -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
by = lambda k: [i for i in items if i["kind"] == k]
ready = [c for n in by("Node") for c in n["status"].get("conditions", [])
         if c["type"] == "Ready" and c["status"] == "True"]
deploys = [d for d in by("Deployment")
           if d["status"].get("availableReplicas", 0) == d["spec"]["replicas"]]
daemons = [d for d in by("DaemonSet")
           if 0 < d["status"].get("numberAvailable", 0) == d["status"]["desiredNumberScheduled"]]
running = all(p["status"].get("phase") == "Running" for p in by("Pod"))
ok = (ready and len(deploys) == len(by("Deployment")) == int(sys.argv[1])
      and len(daemons) == len(by("DaemonSet")) == int(sys.argv[2]) and running)
sys.exit(0 if ok else 1)
' "$(grep -c 'kind: Deployment' "$WORKLOAD")" "$(grep -c 'kind: DaemonSet' "$WORKLOAD")"
}

tails() {
    local f
    for f in "$DIR"/apiserver/*.log "$DIR"/logs/*.log; do
        [ -f "$f" ] || continue
        echo "----- ${f#"$DIR"/} (last 25 lines)" >&2
        tail -n 25 "$f" >&2
    done
    if [ -f "$DIR/admin.kubeconfig" ] && [ -e "/run/netns/$NETNS" ]; then
        echo "----- kubectl get pods -A" >&2
        kubectl_ get nodes,pods -A -o wide >&2 2>&1 || true
        kubectl_ get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 20 >&2 || true
    fi
}

on_start_exit() {
    local rc=$?
    [ "$rc" != 0 ] || return 0
    log "start failed (exit $rc); log tails follow, then the host is restored"
    tails
    teardown || log "teardown after the failed start failed too"
    exit "$rc"
}

start() {
    names "$1"
    build
    local t0=$SECONDS
    [ -d /sys/fs/cgroup/pids ] || die "needs cgroup v1 with the pids controller at /sys/fs/cgroup/pids"
    teardown # what a crashed run left
    rm -rf "$DIR/apiserver" "$DIR/containerd" "$DIR/kubelet" "$DIR/cni" "$DIR/pki" "$DIR/logs" \
        "$DIR/pids" "$DIR/env" "$DIR/admin.kubeconfig" "$DIR/kubectl-cache"
    mkdir -p "$DIR/logs" "$DIR/pids"
    trap on_start_exit EXIT
    trap 'exit 130' INT TERM
    save_host
    make_netns
    make_cgroups

    # etcd and the apiserver (kube-apiserver.sh writes the CA and the tokens file)
    apiserver_env
    in_cluster "$APISERVER_SH" start-etcd "$DIR/apiserver"
    write_configs
    in_cluster "$APISERVER_SH" start-apiserver "$DIR/apiserver" main "$API_PORT"

    spawn containerd env PATH="$NODE_ROOT/usr/bin:$PATH" \
        "$NODE_ROOT/usr/bin/containerd" --config "$DIR/containerd/config.toml"
    spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$DIR/pki/scheduler.kubeconfig" \
        --leader-elect=false --port=0 --secure-port=0
    spawn kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$DIR/pki/controller-manager.kubeconfig" --use-service-account-credentials \
        --service-account-private-key-file "$DIR/apiserver/sa.key" \
        --root-ca-file "$DIR/apiserver/ca.crt" --leader-elect=false --port=0 --secure-port=0
    start_services
    wait_for 30 containerd "$NODE_ROOT/usr/bin/ctr" --address "$SOCK" version
    import_image "${PAUSE_IMAGE%:*}" "$IMAGES/pause.tar"
    import_image "${BUSYBOX_IMAGE%:*}" "$IMAGES/busybox.tar"
    spawn kubelet "$BIN/kubelet" --config "$DIR/kubelet/config.yaml" \
        --kubeconfig "$DIR/kubelet/kubeconfig" --root-dir "$DIR/kubelet/root" \
        --cert-dir "$DIR/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
        --container-runtime=remote --container-runtime-endpoint "unix://$SOCK" \
        --containerd "$SOCK" --oom-score-adj=0 --v=1
    # workload: namespaces and accounts first, the controllers make the pods
    wait_for 30 "the workload's apply" kubectl_ apply -f "$WORKLOAD"
    local deadline=$((t0 + READY_TIMEOUT))
    until services_ready && cluster_ready; do
        [ $SECONDS -lt $deadline ] || die "the cluster was not ready ${READY_TIMEOUT}s after start"
        for c in "${COMPONENTS[@]}"; do
            kill -0 "$(cat "$DIR/pids/$c.pid")" 2>/dev/null || die "$c exited"
        done
        sleep 1
    done
    write_env
    trap - EXIT INT TERM
    log "ready in $((SECONDS - t0)) s: $NODE_NAME at $NODE_IP in netns $NETNS; env in $DIR/env"
}

# Services: kube-proxy (iptables mode: rules in the namespace only; the conntrack
# settings it would write host-wide are left alone, 0 = leave as is), and dnsmasq on
# the node IP (the kubelet's clusterDNS) answering cluster.local from a hosts file that
# hack/cluster/dns.py keeps as the apiserver's Services are (nothing is forwarded).
start_services() {
    spawn kube-proxy env PATH="$NODE_TOOLS:$PATH" LD_LIBRARY_PATH="$NODE_LIBS" \
        XTABLES_LIBDIR="$NODE_LIBS/xtables" XTABLES_LOCKFILE="$DIR/xtables.lock" \
        "$BIN/kube-proxy" --kubeconfig "$DIR/pki/kube-proxy.kubeconfig" \
        --hostname-override "$NODE_NAME" --bind-address "$NODE_IP" --cluster-cidr "$POD_SUBNET" \
        --proxy-mode iptables --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
        --conntrack-tcp-timeout-close-wait 0 --oom-score-adj 0 \
        --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249
    mkdir -p "$DIR/dns"
    spawn cluster-dns python3 "$HERE/cluster/dns.py" --apiserver "https://$NODE_IP:$API_PORT" \
        --ca "$DIR/apiserver/ca.crt" --token admin-token --hosts "$DIR/dns/services"
    spawn dnsmasq env LD_LIBRARY_PATH="$NODE_LIBS" "$NODE_ROOT/usr/sbin/dnsmasq" \
        --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --log-facility=- \
        --user=root --group=root --pid-file="$DIR/dnsmasq.pid" --listen-address="$NODE_IP" \
        --bind-interfaces --local=/cluster.local/ --domain-needed --hostsdir="$DIR/dns"
}

# The `kubernetes` Service through kube-proxy's rules, and its name through the DNS.
services_ready() {
    in_netns curl -fsS -o /dev/null --max-time 2 --cacert "$DIR/apiserver/ca.crt" \
        "https://$KUBERNETES_SERVICE_IP/readyz" -H "Authorization: Bearer admin-token" &&
        grep -q " kubernetes.default.svc.cluster.local" "$DIR/dns/services" 2>/dev/null
}

# kube-apiserver.sh's options for a node's apiserver: on every address of the
# namespace, the node IP advertised (and in its certificate), the Node authorizer for
# the kubelet, ServiceAccount admission (pods get their tokens), and the kubelet
# reached at its InternalIP with its certificate verified.
apiserver_env() {
    export KUBE_BIND_ADDRESS=0.0.0.0 KUBE_ADVERTISE_ADDRESS=$NODE_IP KUBE_AUTHORIZATION_MODE=Node,RBAC
    export KUBE_APISERVER_ISSUER=$SA_ISSUER
    export KUBE_DISABLE_ADMISSION=""
    export KUBE_APISERVER_EXTRA_ARGS="--kubelet-preferred-address-types=InternalIP
        --kubelet-certificate-authority=$DIR/apiserver/ca.crt
        --kubelet-client-certificate=$DIR/pki/apiserver-kubelet-client.crt
        --kubelet-client-key=$DIR/pki/apiserver-kubelet-client.key"
}

restart() {
    names "$1"
    local name=$2
    if [ "$name" = kube-apiserver ]; then
        "$APISERVER_SH" stop "$DIR/apiserver" main
        apiserver_env
        in_cluster "$APISERVER_SH" start-apiserver "$DIR/apiserver" main "$API_PORT"
        return
    fi
    [ -f "$DIR/pids/$name.argv" ] || die "no component $name in $DIR"
    local argv=()
    mapfile -d '' -t argv <"$DIR/pids/$name.argv"
    stop_pid 10 "$DIR/pids/$name.pid"
    spawn "$name" "${argv[@]}"
    case "$name" in
    containerd) wait_for 30 containerd "$NODE_ROOT/usr/bin/ctr" --address "$SOCK" version ;;
    kubelet) wait_for 60 kubelet in_netns curl -fsS -o /dev/null "http://127.0.0.1:10248/healthz" ;;
    esac
}

# import_image REPO TAR: the archive's images (tag T, OCI ref.name) as REPO:T.
import_image() {
    "$NODE_ROOT/usr/bin/ctr" --address "$SOCK" -n k8s.io images import --base-name "$1" "$2" >/dev/null
}

write_env() {
    cat >"$DIR/env.tmp" <<EOF
CLUSTER_DIR=$DIR
CLUSTER_NETNS=$NETNS
CLUSTER_CGROUP=$CGROUP
KUBECONFIG=$DIR/admin.kubeconfig
ADMIN_KUBECONFIG=$DIR/admin.kubeconfig
ADMIN_TOKEN=admin-token
KUBECTL=$BIN/kubectl
KUBECTL_CACHE_DIR=$DIR/kubectl-cache
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
APISERVER_URL=https://$NODE_IP:$API_PORT
APISERVER_PORT=$API_PORT
KUBELET_PORT=$KUBELET_PORT
KUBELET_URL=https://$NODE_IP:$KUBELET_PORT
CA_CERT=$DIR/apiserver/ca.crt
CA_KEY=$DIR/apiserver/ca.key
SA_KEY=$DIR/apiserver/sa.key
SA_ISSUER=$SA_ISSUER
KUBERNETES_SERVICE_IP=$KUBERNETES_SERVICE_IP
CLUSTER_DNS=$NODE_IP
KUBELET_CERT=$DIR/pki/kubelet.crt
KUBELET_KEY=$DIR/pki/kubelet.key
KUBELET_ROOT=$DIR/kubelet/root
CONTAINERD_SOCKET=$SOCK
CTR=$NODE_ROOT/usr/bin/ctr
LOGS=$DIR/logs
EOF
    mv "$DIR/env.tmp" "$DIR/env"
}

# --- status and the host's state ----------------------------------------------------

status() {
    names "$1"
    if [ ! -e "/run/netns/$NETNS" ]; then
        echo "no cluster for $DIR (netns $NETNS absent)"
        return 0
    fi
    echo "netns $NETNS, node $NODE_NAME at $NODE_IP, env $DIR/env"
    local f
    for f in "$DIR"/pids/*.pid "$DIR"/apiserver/*.pid; do
        [ -f "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then echo "  $(basename "$f" .pid): pid $pid running"; else echo "  $(basename "$f" .pid): pid $pid DEAD"; fi
    done
    echo "  processes in cgroup $CGROUP: $(cluster_pids | wc -l)"
    if [ -f "$DIR/admin.kubeconfig" ]; then kubectl_ get nodes,pods -A -o wide 2>&1 || true; fi
}

# The host state `stop` must give back: sysctls, network namespaces, mounts under DIR,
# processes of the cluster's cgroup, and the host paths' contents.
host_state() {
    names "$1"
    local s p
    for s in "${SYSCTLS[@]}"; do echo "sysctl $s=$(sysctl -n "$s")"; done
    ip netns list | sed 's/^/netns /'
    [ -e /run/netns ] && echo "path /run/netns exists (mount: $(mountpoint -q /run/netns && echo yes || echo no))"
    dir_mounts | sed 's/^/mount /'
    cluster_pids | sed 's/^/pid in cgroup /'
    for p in $(cgroup_hierarchies); do [ ! -d "$p/$CGROUP" ] || echo "cgroup $p/$CGROUP"; done
    for p in "${HOST_PATHS[@]}"; do
        if [ -e "$p" ]; then find "$p" -mindepth 1 -xdev | LC_ALL=C sort | sed 's/^/path /'; else echo "absent $p"; fi
    done
}

cmd=${1:-}
case "$cmd" in
build) build ;;
start) start "${2:-}" ;;
stop)
    names "${2:-}"
    t0=$SECONDS
    teardown
    log "stopped in $((SECONDS - t0)) s; host restored"
    ;;
status) status "${2:-}" ;;
exec)
    names "${2:-}"
    shift 2
    in_netns "$@"
    ;;
kubectl)
    names "${2:-}"
    shift 2
    kubectl_ "$@"
    ;;
import)
    names "${2:-}"
    import_image "${3:?REPO}" "${4:?TAR}"
    ;;
host-state) host_state "${2:-}" ;;
restart) restart "${2:-}" "${3:-}" ;;
*)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
