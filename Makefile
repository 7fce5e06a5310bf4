# fanout — developer entry points. `make run` and `make test` are the two
# set-up commands the README promises work on a fresh machine.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
INTERNAL ?= 127.0.0.1:9090

.PHONY: run build test fmt fmt-check lint unit-test client-test browser-test ensure-redis ensure-node ensure-examples ensure-sockudo helm-lint bench bench-compare cluster fuzz-smoke soak-smoke

## Build and start a development node (generated secret and API key, printed).
run:
	$(CARGO) run --release --bin fanout -- serve --dev --listen $(LISTEN) --internal-addr $(INTERNAL)

build:
	$(CARGO) build --release --bin fanout

## Two development nodes on a Redis of their own, on free ports (8081,
## 8082, ...): open the demo on each to see messages cross nodes. Ctrl-C
## stops everything.
cluster: ensure-redis build
	@.ci/dev-cluster.sh

## Formatting, lints, every test of every package of the workspace (the
## server and bench/), the client library, the browser tests, the Helm
## chart. CI (.ci/run) runs this, then `make fuzz-smoke`.
test: fmt-check lint unit-test client-test browser-test helm-lint

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Integration tests start their own redis-server processes and use promtool
# and prometheus (extracted from Debian's package into a cache); with
# FANOUT_REQUIRE_* set, anything missing fails the tests instead of skipping.
# --workspace also builds the server's `fanout` binary, which the bench's
# smoke test (bench/fanout-bench/tests/bench.rs) starts its nodes from.
unit-test: ensure-redis ensure-node ensure-examples
	@bin=$$(.ci/ensure-prometheus.sh) && \
	export PROMTOOL_BIN="$$bin/promtool" PROMETHEUS_BIN="$$bin/prometheus" \
		FANOUT_REQUIRE_REDIS=1 FANOUT_REQUIRE_TOOLS=1 && \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## The client library (clients/js): the committed dist/ is what its
## sources build to (the server embeds dist/fanout.js as /client.js), and
## its unit tests and its integration tests against a real fanout pass,
## and npm pack can package it.
client-test: ensure-node ensure-redis
	$(CARGO) build --bin fanout
	cd clients/js && npm run --silent check-dist && \
		FANOUT_REQUIRE_TOOLS=1 FANOUT_BIN="$(CURDIR)/target/debug/fanout" npm test && \
		npm pack --dry-run --silent >/dev/null

## The demo page and the client library in headless Chromium (Debian's
## package, driven by the pinned playwright-core in tests/browser) against
## real fanout nodes and redis-servers: chat, notifications, failover,
## drain, token refresh, SSE; a screenshot lands in target/browser/demo.png.
browser-test: ensure-node ensure-redis
	@.ci/ensure-chromium.sh
	$(CARGO) build --bin fanout
	cd tests/browser && FANOUT_REQUIRE_TOOLS=1 FANOUT_BIN="$(CURDIR)/target/debug/fanout" \
		node --test --test-concurrency=1 *.test.mjs

ensure-redis:
	@.ci/ensure-redis.sh

# Node.js and the Socket.IO benchmark peer's npm packages (bench-compare and
# its CI smoke run).
ensure-node:
	@.ci/ensure-node.sh

# PHP (phpredis, predis) and Python's redis module: the examples in
# examples/ are run by tests/examples.rs.
ensure-examples:
	@.ci/ensure-examples.sh

## The default benchmark suite for a 2-core machine (docs/benchmarks.md):
## starts its own redis-server and fanout nodes, prints one table.
## BENCH_ARGS adds options, e.g. BENCH_ARGS="--only broadcast --json".
bench: ensure-redis
	$(CARGO) build --release -p fanout -p fanout-bench
	target/release/fanout-bench suite $(BENCH_ARGS)

## The same scenarios against two fanout nodes, two Socket.IO nodes
## (socket.io + @socket.io/redis-adapter) and two Sockudo nodes (Pusher
## protocol, its Redis adapter) on one Redis, with the ratios. Sockudo is
## built once into ~/.cache/fanout-peers when missing (about 10 minutes;
## bench/peers/sockudo/README.md).
bench-compare: ensure-redis ensure-node ensure-sockudo
	$(CARGO) build --release -p fanout -p fanout-bench
	bin=$$(bench/peers/sockudo/build.sh) && \
		target/release/fanout-bench compare --sockudo-bin "$$bin" $(BENCH_ARGS)

# Sockudo, the second benchmark peer: built from crates.io once, into a
# cache outside the repository; prints nothing when it is there already.
ensure-sockudo:
	@bench/peers/sockudo/build.sh >/dev/null

## The soak's short version (docs/benchmarks.md, "Soak"): two fanout nodes
## on a redis-server of their own, 2,000 resuming WebSocket clients
## reconnecting at 20/s, 100 messages/s to users and groups, 90 s, a sample
## every 5 s. Fails (exit 1) if after the first 30 s a node's RSS, open
## files, tasks, send queues or subscriptions keep growing, if a node holds
## more files or tasks once every client has gone than before the first
## came, or if a message is lost. SOAK_ARGS adds options, or overrides
## these (the last value of an option wins). The full run:
## `target/release/fanout-bench soak` (30 minutes, 15,000 clients).
soak-smoke: ensure-redis
	$(CARGO) build -p fanout -p fanout-bench
	target/debug/fanout-bench soak --connections 2000 --duration 90s --sample 5s \
		--warmup 30s --rate 100 --reconnect-rate 20 $(SOAK_ARGS)

## helm lint --strict + template + offline schema validation of the chart
## (installs helm and kubernetes-validate into a cache when missing).
helm-lint:
	bash .ci/check-chart.sh

## Every cargo-fuzz target (fuzz/, docs/fuzzing.md) for a fixed number of
## executions (FUZZ_RUNS, default 50000) from its seed corpus, built with
## the quick-to-build dev profile; the inputs a run finds go to a scratch
## corpus under fuzz/target/, never into the committed seeds. Any crash
## fails, its input saved in fuzz/artifacts/<target>/. Nightly toolchain
## and cargo-fuzz: .ci/ensure-fuzz.sh.
fuzz-smoke:
	@.ci/ensure-fuzz.sh
	@fuzz="cargo +$${FANOUT_FUZZ_TOOLCHAIN:-nightly} fuzz" && \
	$$fuzz build --dev --sanitizer none && \
	for t in $$($$fuzz list); do \
		dir=fuzz/target/smoke/$$t && rm -rf $$dir && mkdir -p $$dir && \
		if $$fuzz run --dev --sanitizer none $$t $$dir fuzz/corpus/$$t -- \
			-runs=$${FUZZ_RUNS:-50000} -dict=fuzz/fanout.dict -timeout=10 \
			-print_final_stats=1 >$$dir.log 2>&1; then \
			echo "fuzz-smoke $$t: $$(grep -m1 'DONE' $$dir.log)"; \
		else \
			tail -n 80 $$dir.log; echo "fuzz-smoke $$t: FAILED (log: $$dir.log)"; exit 1; \
		fi; \
	done
