# The README's two commands: `make run` and `make test`. Each installs what it needs:
# a venv in .venv, the Python dependencies and the Rust extension (maturin develop --release).
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
CORE     := $(VENV)/.tollway-installed
RUST_SRC := $(shell find rust -type f 2>/dev/null) Cargo.toml $(wildcard Cargo.lock)

.PHONY: install run lint test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "maturin>=1.16,<2"

$(CORE): $(BIN)/python pyproject.toml $(RUST_SRC)
	. $(BIN)/activate && maturin develop --release --extras test
	touch $(CORE)

install: $(CORE)

run: install
	$(BIN)/tollway serve --host 127.0.0.1 --port 8787

# ruff (configured in pyproject.toml) and clippy, warnings as errors.
lint: install
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	cargo clippy --release --all-targets --quiet -- -D warnings

test: lint
	cargo test --release --quiet
	$(BIN)/python -m pytest

bench: install
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python benches/load.py

clean:
	rm -rf $(VENV) target
