# `make repro`: set up and run the pipeline. `make test`: set up and run the tests.
SHELL := /bin/bash
ACTIVATE := source .venv/bin/activate

.PHONY: setup repro test lint
setup:
	bash scripts/setup.sh

repro: setup
	$(ACTIVATE) && dvc repro

test: setup
	$(ACTIVATE) && pytest -q

lint:
	$(ACTIVATE) && ruff check src pipelines tests benchmarks service.py
