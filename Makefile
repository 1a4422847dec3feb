# `make repro`: set up and run the pipeline. `make test`: set up and run the tests.
SHELL := /bin/bash
ACTIVATE := source .venv/bin/activate

.PHONY: setup repro retrain store test check test-container lint format bento container
setup:
	bash scripts/setup.sh

# Stage outputs come from the stored remote (dvc-store/, in git): only what changed reruns, and
# `register` registers the champion in this machine's MLflow store.
repro: setup
	$(ACTIVATE) && dvc pull --allow-missing -q && dvc repro

# Every stage recomputed from the raw data (about 90 minutes on 2 cores, 62 of them pre-training),
# then stored.
retrain: setup
	$(ACTIVATE) && dvc repro --force && $(MAKE) store

# Push the outputs dvc.lock names to dvc-store/ and drop the blobs it no longer names.
store:
	$(ACTIVATE) && dvc push -q && dvc gc --workspace --cloud --remote stored --force -q

# Everything but the container image build (its own target: several minutes the first time).
test: setup
	$(ACTIVATE) && pytest -q -m "not container"

# While editing: lint, format check and the unit layer (no DVC data, no servers, < 1 minute).
check:
	$(ACTIVATE) && $(MAKE) lint && pytest -q -m "not slow"

lint:
	$(ACTIVATE) && ruff check . && ruff format --check .

format:
	$(ACTIVATE) && ruff format . && ruff check --fix .

# The registry's champion → BentoML model store → the ferops wheel + a bento (after `make repro`).
bento: setup
	$(ACTIVATE) && ferops-models import-bento && scripts/build_bento.sh

# The CPU container image of that bento, built with podman on a local Debian base: ferops:cpu.
container: setup
	$(ACTIVATE) && ferops-models import-bento && bash scripts/container.sh ferops:cpu

# Builds the CPU image with a small test model, runs it, answers, stops it; figures to
# benchmarks/results/container.json.
test-container: setup
	$(ACTIVATE) && FEROPS_CONTAINER_REPORT=benchmarks/results/container.json \
	  pytest -q -m container tests/service/test_container.py
