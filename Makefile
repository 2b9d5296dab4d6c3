# file-etl — run `make help` for the targets.
# Every target works on a machine with only the Rust toolchain and Debian's
# postgresql package; the broker (tansu) is installed on first use.

SHELL := /bin/bash
CARGO ?= cargo
TANSU_VERSION ?= 0.6.0
TANSU_BIN ?= $(HOME)/.cargo/bin/tansu
# Apache Kafka's broker jars from Maven Central (keep in step with testkit::KAFKA_VERSION).
KAFKA_VERSION ?= 4.1.1
KAFKA_LIBS ?= $(HOME)/.cache/file-etl/kafka-$(KAFKA_VERSION)/libs
export KAFKA_LIBS
ETL_DIR ?= .etl
SEED ?= 42
# compose when a Docker engine answers, the local process stack otherwise.
STACK ?= $(shell docker info >/dev/null 2>&1 && echo compose || echo local)
ETLCTL := target/release/etlctl
COMPOSE ?= docker compose

.DEFAULT_GOAL := help
.PHONY: help build release tansu kafka test lint fmt bench demo-small demo-full up down logs status clean-stack

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo "  STACK=$(STACK) (override with STACK=local|compose)"

build: ## debug build of every crate
	$(CARGO) build --workspace

release: ## optimized binaries in target/release (used by the demos)
	$(CARGO) build --release --bins

tansu: ## install the tansu Kafka-compatible broker when missing
	@if [ -x "$(TANSU_BIN)" ] && "$(TANSU_BIN)" --version 2>/dev/null | grep -q "$(TANSU_VERSION)"; then \
		echo "tansu $(TANSU_VERSION) present: $(TANSU_BIN)"; \
	else \
		echo "installing tansu $(TANSU_VERSION) (about 7 minutes the first time)"; \
		$(CARGO) install tansu --version $(TANSU_VERSION) --locked --features dynostore,libsql; \
	fi

kafka: ## fetch Apache Kafka's broker jars (the stack's durable broker) when missing
	@if [ -f "$(KAFKA_LIBS)/kafka_2.13-$(KAFKA_VERSION).jar" ]; then \
		echo "kafka $(KAFKA_VERSION) present: $(KAFKA_LIBS)"; \
	else \
		echo "fetching Apache Kafka $(KAFKA_VERSION) jars with mvn into $(KAFKA_LIBS)"; \
		mvn -q -B -f tools/kafka/pom.xml -Dkafka.version=$(KAFKA_VERSION) \
			dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$(KAFKA_LIBS)"; \
	fi

# `cargo test --workspace` builds every package's binaries for its integration tests, so
# the end-to-end tests find all four services next to their own executables. No separate
# `cargo build --bins` first: a dev-dependency turns on a feature of a shared crate (serde's
# `alloc`, through criterion's ciborium), so every crate above serde was compiled twice.
test: tansu kafka ## every test: unit, integration with real Postgres/tansu/SFTP, end to end
	$(CARGO) test --workspace --no-fail-fast

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

# Flags of target/release/etl-bench (`--help`): e.g. BENCH_FLAGS=--quick for a smoke run.
BENCH_FLAGS ?= --tracing-overhead
bench: tansu kafka release ## criterion benchmarks, then etl-bench on both brokers: floors, burst, steady latency, resources -> $(ETL_DIR)/bench.json
	$(CARGO) bench --workspace
	target/release/etl-bench --output $(ETL_DIR)/bench.json $(BENCH_FLAGS)

ifeq ($(STACK),compose)
demo-small: ## the whole pipeline with 100 rows, then a report
	$(COMPOSE) up -d --wait
	$(COMPOSE) run --rm etlctl demo --rows 100 --seed $(SEED)
demo-full: ## the whole pipeline with 100,000 rows, then a report
	$(COMPOSE) up -d --wait
	$(COMPOSE) run --rm etlctl demo --rows 100000 --seed $(SEED)
up: ## start the stack and wait for every health check
	$(COMPOSE) up -d --wait
down: ## stop the stack
	$(COMPOSE) down
logs: ## follow the logs of the stack
	$(COMPOSE) logs -f
status: ## health of every component
	$(COMPOSE) ps
clean-stack: ## stop the stack and delete its data
	$(COMPOSE) down -v
else
demo-small: tansu kafka release ## the whole pipeline with 100 rows, then a report
	$(ETLCTL) demo --dir $(ETL_DIR) --rows 100 --seed $(SEED)
demo-full: tansu kafka release ## the whole pipeline with 100,000 rows, then a report
	$(ETLCTL) demo --dir $(ETL_DIR) --rows 100000 --seed $(SEED)
up: tansu kafka release ## start the stack and wait for every health check
	$(ETLCTL) up --dir $(ETL_DIR)
down: ## stop the stack
	@if [ -x $(ETLCTL) ]; then $(ETLCTL) down --dir $(ETL_DIR); else echo "nothing built, nothing running"; fi
logs: ## follow the logs of the stack
	tail -F $(ETL_DIR)/logs/*.log
status: ## health of every component
	$(ETLCTL) status --dir $(ETL_DIR)
clean-stack: down ## stop the stack and delete its data
	rm -rf $(ETL_DIR)
endif
