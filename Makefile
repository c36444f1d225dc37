# mediavault — `make run` serves the embedded default; `make test` runs everything.
.PHONY: run test lint services build clean-data bench-upload-rss bench-reap

CARGO ?= cargo
# nextest runs test binaries in parallel processes; plain cargo test otherwise.
TEST_RUNNER := $(shell cargo nextest --version >/dev/null 2>&1 && echo "nextest run --no-fail-fast" || echo "test --no-fail-fast")

run:
	$(CARGO) run --bin mediavault -- serve

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/lint-deploy.sh

services:
	scripts/test-services.sh

test: lint services
	. target/test-services/env && $(CARGO) $(TEST_RUNNER) --workspace

clean-data:
	rm -rf data

# Peak server RSS while receiving one 100 MiB upload (files, then Garage).
bench-upload-rss:
	bench/upload-rss.sh files
	bench/upload-rss.sh s3

# One reaper pass over 100,000 expired media on Postgres + Garage (N=… to change).
N ?= 100000
bench-reap: services
	. target/test-services/env && $(CARGO) run --release -p mediavault-bench -- reap $(N)
