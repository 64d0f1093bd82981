# Two commands do all the set-up on a fresh Debian 12 machine with Python 3.11:
#   make run    serve with embedded defaults
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.test-installed

.PHONY: install run test test-deps lint bench bench-deps clean

# Debian's own python3 needs the python3-venv package for `-m venv`: install it when venv fails.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }

# The package and its runtime dependencies: all `make run` needs.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# Plus the test tools (pytest, dnspython, websockets, schemathesis...).
$(TEST_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

run: install
	$(BIN)/edge serve

# curl and dig are the real clients some end-to-end tests drive; pebble (the ACME test CA) and lego
# (an ACME client) are the real peers of the ACME tests (tests/e2e/test_acme.py); nft and openssl build
# and probe the egress tests' network namespaces (tests/e2e/test_egress*.py). Installed if missing.
test-deps:
	@missing=""; \
	for t in curl:curl dig:dnsutils pebble:pebble lego:lego nft:nftables openssl:openssl redis-server:redis-server; do \
	  command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "test: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(TEST_STAMP) test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark suite (bench/README.md): Debian packages for the peers and load generators, the
# `bench` extra for plots, then bench/run.py (~8 minutes; BENCH_ARGS=--quick for a ~1.5-minute pass).
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(TEST_STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench-deps:
	@missing=""; \
	for t in nginx:nginx-light wrk:wrk dnsmasq:dnsmasq-base dnsperf:dnsperf taskset:util-linux; do \
	  command -v $${t%%:*} >/dev/null || test -x /usr/sbin/$${t%%:*} || missing="$$missing $${t#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "bench: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

bench: $(BENCH_STAMP) bench-deps
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# ruff (lint and format), mypy and import-linter, each configured in pyproject.toml (mypy and
# lint-imports take their targets from there: all of edge/). Every check runs, so one failure does
# not hide the next; lint fails if any did.
LINT_STEPS := "ruff check edge tests bench" "ruff format --check edge tests bench" "mypy" "lint-imports"

lint: $(TEST_STAMP)
	@status=0; for step in $(LINT_STEPS); do \
	  echo "$(BIN)/$$step"; $(BIN)/$$step || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info
