#!/usr/bin/env bash
# Build the ferops wheel into dist/ (the package the bento installs: no source list to keep)
# and a bento of the BentoML store's ferops-resnet18:latest; prints the bento's tag.
# Arguments go to `bentoml build` (scripts/container.sh passes -f with the CPU image's base).
# PYTHON: the environment's interpreter (default .venv/bin/python); BENTOML_HOME is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
rm -rf build dist
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w dist . >&2
rm -rf build
"$BIN/bentoml" build . --output tag "$@" | tail -n 1 | sed 's/^__tag__://'
