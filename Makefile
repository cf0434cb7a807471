# kubelet-scope: `make demo` runs the demo, `make test` runs every test.
# Both do their own set-up on a fresh machine; slow set-up is cached in .cache/.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

CACHE := $(CURDIR)/.cache
export CARGO_TERM_COLOR ?= never
WASM := target/wasm32-wasip1/release/kubelet_scope_filter.wasm
CLI := target/release/kubelet-scope

.PHONY: test demo setup-rust lint unit wasm cli

# Each area adds its test target to this list.
TEST_TARGETS := lint unit

test: $(TEST_TARGETS)
	@echo "make test: all passed"

setup-rust:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

lint: setup-rust
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p kubelet-scope-filter --target wasm32-wasip1 --lib -- -D warnings

unit: setup-rust
	cargo test --workspace

wasm: setup-rust
	cargo build -p kubelet-scope-filter --target wasm32-wasip1 --release

cli:
	cargo build -p kubelet-scope --release
