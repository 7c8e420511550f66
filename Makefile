# The one entry point for every chore; CI (.ci/run) and pre-commit call the same targets.
# `make dev` once in a virtual environment, then `make test` / `make lint` as you work.

.DEFAULT_GOAL := help
PYTHON ?= python
READMEDIR := target/readme-blocks

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: install
install:  ## the development tools and every optional dependency (torch is ~5 GB)
	$(PYTHON) -m pip install maturin ".[test,torch,sim,flower-simulation,nvflare,parity,dev,docs]"

.PHONY: dev
dev:  ## build the extension into this environment (optimised, no LTO, incremental)
	maturin develop --profile fast

.PHONY: test
test:  ## the Rust and Python test suites
	cargo test
	$(PYTHON) -m pytest

.PHONY: format
format:  ## rewrite the sources in the house style
	cargo fmt --all
	ruff format python tests benches examples scripts fuzz
	ruff check --fix python tests benches examples scripts fuzz

.PHONY: lint
lint:  ## formatting, clippy, ruff, mypy --strict, the _core stub, the README's and the docs' types
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	ruff check python tests benches examples scripts fuzz
	ruff format --check python tests benches examples scripts fuzz
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest aggkit._core
	$(PYTHON) scripts/readme_blocks.py $(READMEDIR)
	pyright --pythonpath $$($(PYTHON) -c 'import sys; print(sys.executable)') $(READMEDIR)

FUZZ_SECONDS ?= 90

.PHONY: docs
docs:  ## build the documentation site into site/ (mkdocs --strict, offline; the docs extra)
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

.PHONY: release-check
release-check:  ## build the manylinux wheel and the sdist, install each with numpy alone (minutes)
	bash scripts/check_release.sh

.PHONY: fuzz
fuzz:  ## fuzz the public API for FUZZ_SECONDS (coverage-guided with atheris: fuzz/README.md)
	$(PYTHON) fuzz/fuzz_api.py --budget-seconds $(FUZZ_SECONDS)

.PHONY: bench
bench:  ## the benchmark grid against numpy / torch and the read bandwidth (minutes)
	$(PYTHON) -m aggkit bench
