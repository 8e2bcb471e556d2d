# p2pool: the two commands a user needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build test demo fmt-check clippy unit conformance bench fmt clean

all: build

build:
	$(CARGO) build --release

## The demo: regtest bcoin, three nodes peered on loopback, a test miner on each (Ctrl-C stops).
demo:
	scripts/demo.sh

## The whole test suite: formatting, lints, every test, and the conformance vectors.
test: fmt-check clippy unit conformance

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets

conformance:
	$(CARGO) test --release --test conformance -- --nocapture

bench:
	$(CARGO) bench --bench codec
	$(CARGO) bench --bench template
	$(CARGO) bench --bench sharechain
	$(CARGO) bench --bench p2p
	$(CARGO) bench --bench worker

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
