# mediavault — `make run` serves the embedded default; `make test` runs everything.
.PHONY: run test lint services clients build clean-data bench bench-upload-rss bench-upload-timeline bench-reap bench-scale fuzz chaos chaos-cluster soak deploy-check

CARGO ?= cargo
# nextest runs each test in a process of its own, in parallel, but for the
# tests on the shared SoftHSM2 token, one at a time (.config/nextest.toml);
# plain cargo test otherwise.
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

# Public client libraries the end-to-end tests drive the server with
# (tests/clients/), pinned by version and hash, installed once under target/.
clients:
	scripts/client-tools.sh

# Where scripts/test-services.sh keeps its state and the env file it writes.
TEST_SERVICES := $(or $(MEDIAVAULT_TEST_SERVICES_DIR),target/test-services)

# Then the same on a machine where no PostgreSQL answers: a few tests against
# the private cluster scripts/test-services.sh makes there (about 10 s).
test: lint services clients
	. $(TEST_SERVICES)/env && $(CARGO) $(TEST_RUNNER) --workspace
	CARGO="$(CARGO)" scripts/check-bare-machine.sh

clean-data:
	rm -rf data

# The deploy artifacts for real, with podman and no registry (root, Debian):
# deploy/Dockerfile built on local stand-ins of its base images
# (deploy/test-standins/), deploy/compose/compose.yaml brought up with a file
# round trip, then the image run as the rendered Helm Deployment says; torn
# down at the end. Opt-in, not part of `make test`: a first run is 20 to 30
# minutes (the release build), a later one under a minute (docs/operations.md).
deploy-check:
	scripts/deploy-check.sh

# Where cargo builds: a shared CARGO_TARGET_DIR is honoured.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

# The release server against object_store used directly on the same store,
# on Postgres + Garage and on SQLite + files: 100 MiB upload/download
# throughput, 100 MiB by URL against sent directly, 16 KiB uploads at
# 1/16/64 clients, peak RSS under 16 large uploads; 16 KiB uploads at 16
# clients and 100 MiB uploads with KEKs in the SoftHSM2 token against
# configured keys; then the blob format's per-core crypto throughput
# (criterion).
# Tables on stdout, raw results in bench/results/. Every MEDIAVAULT__* variable
# in the environment reaches the server. About 5 minutes once built.
bench: services
	$(CARGO) build --release -p mediavault -p mediavault-bench
	$(CARGO) bench -p mediavault-storage --bench seal --no-run
	. $(TEST_SERVICES)/env && $(TARGET_DIR)/release/mediavault-bench all

# Peak server RSS while receiving one 100 MiB upload (files, then Garage).
bench-upload-rss:
	bench/upload-rss.sh files
	bench/upload-rss.sh s3

# Where one 16 KiB upload's time goes at one client on Postgres + Garage,
# step by step, from a loopback packet capture (needs tcpdump and root).
bench-upload-timeline:
	bench/upload-timeline.sh

# One reaper pass over 100,000 expired media (N=… to change) on Postgres +
# Garage (BACKEND=sqlite-files: on SQLite and local files).
N ?= 100000
BACKEND ?= postgres-s3
bench-reap: services
	. $(TEST_SERVICES)/env && $(CARGO) run --release -p mediavault-bench -- reap $(N) --backend $(BACKEND)

# Cost against table size on Postgres + Garage: an empty database next to
# one of ROWS media across 1,000 apps, 1% of them due to the reaper (rows
# written by SQL): upload and /info latency, start-up, the reaper's database
# work, operator commands and admin listings, database size. ROWS=1000000
# for a quick run; at 10 million it takes about 20 minutes and 10 GB of disk.
ROWS ?= 10000000
bench-scale: services
	$(CARGO) build --release -p mediavault -p mediavault-bench
	. $(TEST_SERVICES)/env && $(TARGET_DIR)/release/mediavault-bench scale --rows $(ROWS)

# Each fuzz target for FUZZ_SECONDS (default 10 min), one after another;
# FUZZ_TARGETS=… to run fewer. cargo-fuzz needs nightly features: the stable
# toolchain gives them with RUSTC_BOOTSTRAP=1. fuzz/seeds/<target> starts the
# corpus, which grows in fuzz/corpus/<target> (not kept); crashes land in
# fuzz/artifacts/<target>, the full output in fuzz/logs/<target>.log.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= blob_decoder range_parser multipart_upload config_parser
FUZZ := RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	$(FUZZ) build
	@mkdir -p fuzz/logs
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "== $$t: $(FUZZ_SECONDS) s"; \
		status=0; \
		$(FUZZ) run $$t $(CURDIR)/fuzz/corpus/$$t $(CURDIR)/fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >fuzz/logs/$$t.log 2>&1 || status=$$?; \
		grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units' fuzz/logs/$$t.log; \
		if [ $$status -ne 0 ]; then tail -n 40 fuzz/logs/$$t.log; echo "== $$t FAILED"; exit $$status; fi; \
	done
	@for t in $(FUZZ_TARGETS); do \
		printf '%-18s %s executions\n' $$t "$$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz/logs/$$t.log)"; \
	done

# Robustness runs (docs/reliability.md), each against its own PostgreSQL
# cluster and Garage on loopback, never the shared ones; results go to
# bench/results/. `chaos`: 1,000 uploads while Garage, PostgreSQL and the
# service are killed and restarted; fails if a file is lost or orphaned;
# then the cluster run. `chaos-cluster` alone: two replicas under a steady
# load while a three-node Garage cluster loses one node at a time; fails on
# any failed request, lost file or orphan.
# Both binaries are built in one invocation (one feature resolution) and
# run from the target directory, so that `cargo run` does not rebuild.
RELEASE_DIR = $(or $(CARGO_TARGET_DIR),target)/release
chaos:
	$(CARGO) build --release -p mediavault -p mediavault-chaos
	$(RELEASE_DIR)/mediavault-chaos chaos
	$(RELEASE_DIR)/mediavault-chaos cluster

chaos-cluster:
	$(CARGO) build --release -p mediavault -p mediavault-chaos
	$(RELEASE_DIR)/mediavault-chaos cluster

# A steady mix of uploads, downloads, deletes and reaping; samples server
# RSS and open descriptors. SOAK_DURATION=2m make soak for a short one.
SOAK_DURATION ?= 30m
soak:
	$(CARGO) build --release -p mediavault -p mediavault-chaos
	$(RELEASE_DIR)/mediavault-chaos soak --duration $(SOAK_DURATION)
