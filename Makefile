# Two commands do all the set-up on a fresh Debian 12 machine with Python 3.11:
#   make run    serve with embedded defaults
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

run: install
	$(BIN)/edge serve

# curl and dig are the real clients some end-to-end tests drive.
test-deps:
	@command -v curl >/dev/null && command -v dig >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl dnsutils >/dev/null; }

test: install test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check edge tests bench

clean:
	rm -rf $(VENV) build *.egg-info
