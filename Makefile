# p2pool: the two commands a user needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build test demo fmt-check clippy unit conformance bench fuzz fmt clean

all: build

build:
	$(CARGO) build --release

## The demo: regtest bcoin, three nodes peered on loopback, a test miner on each (Ctrl-C stops).
demo:
	scripts/demo.sh

## The whole test suite: formatting, lints, every test, and the conformance vectors.
## One build serves unit and conformance (the test profile); clippy's check build shares
## its proc macros and build scripts (doc/performance.md, "make test").
test: fmt-check clippy unit conformance

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets

# The conformance vectors, in the test profile: after `unit` this builds nothing.
conformance:
	$(CARGO) test --test conformance -- --nocapture

bench:
	$(CARGO) bench --bench codec
	$(CARGO) bench --bench template
	$(CARGO) bench --bench sharechain
	$(CARGO) bench --bench p2p
	$(CARGO) bench --bench worker
	$(CARGO) bench --bench attack

## Fuzz every decoder, one target after another, FUZZ_SECONDS each, one process, niced
## (needs cargo-fuzz and the nightly toolchain; see doc/performance.md, "Fuzzing").
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= frame message share tx_block template stratum getwork store
FUZZ_CARGO ?= cargo +nightly

fuzz:
	@mkdir -p fuzz/logs
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s (log: fuzz/logs/$$t.log)"; \
		mkdir -p fuzz/corpus/$$t fuzz/seeds/$$t; \
		nice -n 19 $(FUZZ_CARGO) fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 \
			> fuzz/logs/$$t.log 2>&1; \
		status=$$?; \
		grep -E '^(stat::|Done |==[0-9]+==|SUMMARY|thread .* panicked|artifact_prefix|Test unit written)' fuzz/logs/$$t.log; \
		echo "== $$t: $$(ls fuzz/corpus/$$t | wc -l) corpus files, exit $$status"; \
		[ $$status -eq 0 ] || exit $$status; \
	done

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
