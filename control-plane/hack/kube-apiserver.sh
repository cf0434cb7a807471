#!/usr/bin/env bash
# A real kube-apiserver + etcd for the control plane's integration tests.
#
# No package registry ships a kube-apiserver binary, so it is built from Debian
# bookworm's `kubernetes` source package (the full v1.20.2 tree with vendor/) with
# Debian's Go 1.19; etcd is Debian's etcd-server 3.4. Nothing is installed
# system-wide: packages are fetched with `apt-get source`/`apt-get download` and
# unpacked with `dpkg -x` under $KUBE_CACHE (default <repo>/.cache/kube). The built
# binary is cached there, so only the first run pays the ~6 min build.
#
#   kube-apiserver.sh build                       fetch + build (cached)
#   kube-apiserver.sh build-node                  also kubelet, kube-scheduler,
#                                                 kube-controller-manager, kube-proxy and
#                                                 kubectl (cached)
#   kube-apiserver.sh start DIR                   etcd + apiserver "main", env in DIR/env
#   kube-apiserver.sh start-etcd DIR
#   kube-apiserver.sh start-apiserver DIR NAME [PORT]   another apiserver on the same etcd
#   kube-apiserver.sh stop DIR [NAME]             stop one process (by PID), or all
#
# Each DIR is a cluster of its own: its etcd, its CA, and its service-account signing
# key (sa.key). KUBE_APISERVER_ISSUER (default https://kubernetes.default.svc) is the
# `iss` of its tokens and its API audience: a second DIR with another issuer plays a
# virtual cluster's apiserver.
#
# Everything listens on 127.0.0.1 only, on free ports picked at start. DIR holds the
# certificates (clients trust ca.crt), the token file (tokens `admin-token` for system:masters and
# `scope-token` for the user `kubelet-scope`, who has no permissions until bound),
# logs, PID and port files.
#
# hack/cluster.sh (a whole node in a network namespace) sets, for `start-etcd` and
# `start-apiserver` (defaults keep the tests' loopback apiserver as it was):
#   KUBE_BIND_ADDRESS        the apiserver's --bind-address (127.0.0.1)
#   KUBE_ADVERTISE_ADDRESS   --advertise-address, also in the serving certificate
#   KUBE_AUTHORIZATION_MODE  --authorization-mode (RBAC)
#   KUBE_DISABLE_ADMISSION   --disable-admission-plugins (ServiceAccount; empty: none)
#   KUBE_APISERVER_EXTRA_ARGS  more flags, split on spaces
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KUBE_CACHE=${KUBE_CACHE:-$REPO/.cache/kube}
K8S_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
K8S_VERSION=v1.20.2
GO_PKGS=(golang-1.19-go golang-1.19-src)
OTHER_PKGS=(etcd-server golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
APISERVER=$KUBE_CACHE/bin/kube-apiserver
ETCD=$KUBE_CACHE/root/usr/bin/etcd

log() { echo "kube-apiserver.sh: $*" >&2; }

# apt options for a project-local deb-src list, so the host's sources.list stays
# untouched (the base image has no deb-src lines).
apt_src_opts() {
    echo "-o Dir::Etc::SourceList=$KUBE_CACHE/apt/sources.list" \
        "-o Dir::Etc::SourceParts=/dev/null" \
        "-o Dir::State::Lists=$KUBE_CACHE/apt/lists" \
        "-o Dir::Cache::Archives=$KUBE_CACHE/apt/archives"
}

fetch() {
    mkdir -p "$KUBE_CACHE"/{apt/lists/partial,apt/archives/partial,debs,root,bin}
    if [ -z "$(find /var/lib/apt/lists/ -mindepth 1 -maxdepth 1 ! -name lock ! -name partial ! -name auxfiles 2>/dev/null)" ]; then
        log "apt lists are empty: apt-get update"
        apt-get update -qq
    fi
    if ! ls "$KUBE_CACHE"/debs/etcd-server_*.deb >/dev/null 2>&1; then
        log "apt-get download ${GO_PKGS[*]} ${OTHER_PKGS[*]}"
        (cd "$KUBE_CACHE/debs" && apt-get download -qq "${GO_PKGS[@]}" "${OTHER_PKGS[@]}")
    fi
    if [ ! -x "$ETCD" ] || [ ! -x "$KUBE_CACHE/root/usr/lib/go-1.19/bin/go" ]; then
        for deb in "$KUBE_CACHE"/debs/*.deb; do dpkg -x "$deb" "$KUBE_CACHE/root"; done
    fi
    if [ ! -d "$KUBE_CACHE/src/kubernetes-1.20.2" ]; then
        printf '%s\n' "deb-src http://deb.debian.org/debian bookworm main" \
            "deb-src http://deb.debian.org/debian-security bookworm-security main" \
            >"$KUBE_CACHE/apt/sources.list"
        # shellcheck disable=SC2046
        apt-get $(apt_src_opts) -qq update
        rm -rf "$KUBE_CACHE/src.tmp" && mkdir -p "$KUBE_CACHE/src.tmp"
        log "apt-get source kubernetes=$K8S_SRC_VERSION"
        # shellcheck disable=SC2046
        (cd "$KUBE_CACHE/src.tmp" &&
            apt-get $(apt_src_opts) -qq source --download-only "kubernetes=$K8S_SRC_VERSION" &&
            dpkg-source --no-check -x ./*.dsc kubernetes-1.20.2 >/dev/null)
        rm -rf "$KUBE_CACHE/src" && mv "$KUBE_CACHE/src.tmp" "$KUBE_CACHE/src"
    fi
}

# Debian's Go in GOPATH mode, offline, with the caches under $KUBE_CACHE.
go_env() {
    export GOROOT=$KUBE_CACHE/root/usr/lib/go-1.19
    export GOPATH=$KUBE_CACHE/gopath
    export GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
    export GOCACHE=$KUBE_CACHE/gocache
    export PATH=$GOROOT/bin:$PATH
}

build() {
    if [ -x "$APISERVER" ] && [ -x "$ETCD" ]; then
        return 0
    fi
    local started=$SECONDS
    fetch
    local root=$KUBE_CACHE/root
    go_env
    local k8s=$GOPATH/src/k8s.io/kubernetes
    mkdir -p "$GOPATH/src/k8s.io"
    ln -sfn "$KUBE_CACHE/src/kubernetes-1.20.2" "$k8s"
    cd "$k8s"

    # reflect2 1.0.1 crashes on Go >= 1.18 (nil pointer in Type2 on every POST);
    # take Debian's fixed reflect2 and the json-iterator that matches it.
    local gocode=$root/usr/share/gocode/src/github.com
    for p in modern-go/reflect2 json-iterator/go; do
        rm -rf "vendor/github.com/$p"
        cp -rL "$gocode/$p" "vendor/github.com/$p"
    done

    # The OpenAPI definitions are generated at build time and not in the tarball.
    if [ ! -s pkg/generated/openapi/zz_generated.openapi.go ]; then
        log "building openapi-gen"
        go build -o "$KUBE_CACHE/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
        local dirs
        # grep -r does not follow vendor/k8s.io/* symlinks into staging/, so every
        # package is listed once.
        dirs=$(grep -rl --include='*.go' '+k8s:openapi-gen=' pkg staging/src/k8s.io vendor |
            grep -v -e code-generator -e sample-apiserver -e testdata -e kube-openapi |
            xargs -n1 dirname | sed -e 's#^staging/src/#vendor/#' -e 's#^#k8s.io/kubernetes/#' |
            LC_ALL=C sort -u | paste -sd, -)
        log "generating pkg/generated/openapi for $(tr ',' '\n' <<<"$dirs" | wc -l) packages"
        "$KUBE_CACHE/bin/openapi-gen" --input-dirs "$dirs" \
            --output-base "$GOPATH/src" \
            --output-package k8s.io/kubernetes/pkg/generated/openapi \
            -O zz_generated.openapi \
            --go-header-file vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
            --report-filename "$KUBE_CACHE/openapi-violations.txt"
    fi

    build_component kube-apiserver
    log "built $APISERVER in $((SECONDS - started)) s"
}

# build_component NAME: go build k8s.io/kubernetes/cmd/NAME into $KUBE_CACHE/bin,
# with the version stamped as the release's (the environment of `build`).
build_component() {
    local name=$1
    local ld=""
    log "building $name $K8S_VERSION (takes several minutes)"
    for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
        k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
        ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    go build -ldflags "-s -w$ld" -o "$KUBE_CACHE/bin/$name.tmp" "k8s.io/kubernetes/cmd/$name"
    mv "$KUBE_CACHE/bin/$name.tmp" "$KUBE_CACHE/bin/$name"
}

# The node's components, built in the same tree and environment as the apiserver.
build_node() {
    build
    local missing=()
    for name in kubelet kube-scheduler kube-controller-manager kube-proxy kubectl; do
        [ -x "$KUBE_CACHE/bin/$name" ] || missing+=("$name")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    local started=$SECONDS
    go_env
    cd "$GOPATH/src/k8s.io/kubernetes"
    for name in "${missing[@]}"; do
        build_component "$name"
    done
    log "built ${missing[*]} in $((SECONDS - started)) s"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS [curl args...]: poll until the URL answers 200.
wait_http() {
    local url=$1 deadline=$((SECONDS + $2))
    shift 2
    until curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            return 1
        fi
        sleep 0.2
    done
}

start_etcd() {
    local dir=$1
    mkdir -p "$dir"
    pki "$dir" # clients can be configured before the apiserver is up
    local client peer
    client=$(free_port)
    peer=$(free_port)
    "$ETCD" --name scope-test --data-dir "$dir/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "scope-test=http://127.0.0.1:$peer" \
        --unsafe-no-fsync >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    echo "$client" >"$dir/etcd.port"
    if ! wait_http "http://127.0.0.1:$client/health" 30; then
        log "etcd did not become healthy; see $dir/etcd.log"
        tail -20 "$dir/etcd.log" >&2
        return 1
    fi
}

pki() {
    local dir=$1
    [ -f "$dir/sa.key" ] && return 0
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    # A CA and a leaf certificate signed by it: rustls refuses a self-signed CA
    # certificate used as the server's own certificate.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kubelet-scope-test-ca \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
        -keyout "$dir/serving.key" -out "$dir/serving.csr" 2>/dev/null
    # and the names pods reach it by: the `kubernetes` Service's ClusterIP (the first
    # address of --service-cluster-ip-range) and its DNS names
    local pods=IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
    pods+=,DNS:kubernetes.default.svc.cluster.local
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost${KUBE_ADVERTISE_ADDRESS:+,IP:$KUBE_ADVERTISE_ADDRESS},$pods" \
        "basicConstraints=CA:FALSE" \
        "extendedKeyUsage=serverAuth" >"$dir/serving.ext"
    openssl x509 -req -in "$dir/serving.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/serving.ext" -out "$dir/serving.crt" 2>/dev/null
    printf '%s\n' 'admin-token,admin,1,"system:masters"' 'scope-token,kubelet-scope,2' >"$dir/tokens.csv"
}

start_apiserver() {
    local dir=$1 name=$2 port=${3:-}
    [ -n "$port" ] || port=$(free_port)
    pki "$dir"
    local disable=${KUBE_DISABLE_ADMISSION-ServiceAccount}
    # shellcheck disable=SC2086 # the optional flags are split on purpose
    "$APISERVER" --bind-address "${KUBE_BIND_ADDRESS:-127.0.0.1}" --secure-port "$port" \
        ${KUBE_ADVERTISE_ADDRESS:+--advertise-address "$KUBE_ADVERTISE_ADDRESS"} \
        --etcd-servers "http://127.0.0.1:$(cat "$dir/etcd.port")" \
        --tls-cert-file "$dir/serving.crt" --tls-private-key-file "$dir/serving.key" \
        --token-auth-file "$dir/tokens.csv" --authorization-mode "${KUBE_AUTHORIZATION_MODE:-RBAC}" \
        --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
        --service-account-issuer "${KUBE_APISERVER_ISSUER:-https://kubernetes.default.svc}" \
        --api-audiences "${KUBE_APISERVER_ISSUER:-https://kubernetes.default.svc}" \
        ${disable:+--disable-admission-plugins "$disable"} \
        --service-cluster-ip-range 10.96.0.0/16 \
        ${KUBE_APISERVER_EXTRA_ARGS:-} \
        >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    echo "$port" >"$dir/$name.port"
    if ! wait_http "https://127.0.0.1:$port/readyz" 90 --cacert "$dir/ca.crt" -H "Authorization: Bearer admin-token"; then
        log "kube-apiserver $name did not become ready; see $dir/$name.log"
        tail -30 "$dir/$name.log" >&2
        return 1
    fi
}

stop_one() {
    local pidfile=$1
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# Two builds at once in one GOPATH/GOCACHE (make -j, or two clones sharing .cache)
# would race: the builds take a lock on the cache.
locked() {
    mkdir -p "$KUBE_CACHE"
    exec 9>"$KUBE_CACHE/.build.lock"
    flock 9
    "$@"
    exec 9>&-
}

cmd=${1:-}
case "$cmd" in
build) locked build ;;
build-node) locked build_node ;;
start)
    locked build
    start_etcd "$2"
    start_apiserver "$2" main
    ;;
start-etcd) start_etcd "$2" ;;
start-apiserver) start_apiserver "$2" "$3" "${4:-}" ;;
stop)
    if [ -n "${3:-}" ]; then
        stop_one "$2/$3.pid"
    else
        for f in "$2"/*.pid; do
            [ "$f" = "$2/etcd.pid" ] || stop_one "$f"
        done
        stop_one "$2/etcd.pid"
    fi
    ;;
*)
    sed -n '2,25p' "$0" >&2
    exit 2
    ;;
esac
