# p2pool: the two commands a user needs are `make test` and (later) `make demo`.
CARGO ?= cargo

.PHONY: all build test fmt-check clippy unit conformance bench fmt clean

all: build

build:
	$(CARGO) build --release

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
	$(CARGO) bench --bench sharechain

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
