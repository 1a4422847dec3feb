# `make repro`: set up and run the pipeline. `make test`: set up and run the tests.
SHELL := /bin/bash
ACTIVATE := source .venv/bin/activate

.PHONY: setup repro test lint bento
setup:
	bash scripts/setup.sh

repro: setup
	$(ACTIVATE) && dvc repro

test: setup
	$(ACTIVATE) && pytest -q

lint:
	$(ACTIVATE) && ruff check src pipelines tests benchmarks service.py

# The registry's champion → BentoML model store → a bento (run after `make repro`).
bento: setup
	$(ACTIVATE) && ferops-models import-bento && bentoml build
