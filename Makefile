# fanout — developer entry points. `make run` and `make test` are the two
# set-up commands the README promises work on a fresh machine.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
INTERNAL ?= 127.0.0.1:9090

.PHONY: run build test fmt fmt-check lint unit-test ensure-redis helm-lint

## Build and start a development node (generated secret and API key, printed).
run:
	$(CARGO) run --release --bin fanout -- serve --dev --listen $(LISTEN) --internal-addr $(INTERNAL)

build:
	$(CARGO) build --release --bin fanout

## Everything CI checks: formatting, lints, every test, the Helm chart.
test: fmt-check lint unit-test helm-lint

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

# Integration tests start their own redis-server processes and use promtool
# and prometheus (extracted from Debian's package into a cache); with
# FANOUT_REQUIRE_* set, anything missing fails the tests instead of skipping.
unit-test: ensure-redis
	@bin=$$(.ci/ensure-prometheus.sh) && \
	export PROMTOOL_BIN="$$bin/promtool" PROMETHEUS_BIN="$$bin/prometheus" \
		FANOUT_REQUIRE_REDIS=1 FANOUT_REQUIRE_TOOLS=1 && \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --no-fail-fast; \
	else \
		$(CARGO) test --no-fail-fast; \
	fi

ensure-redis:
	@.ci/ensure-redis.sh

## helm lint --strict + template + offline schema validation of the chart
## (installs helm and kubernetes-validate into a cache when missing).
helm-lint:
	bash .ci/check-chart.sh
