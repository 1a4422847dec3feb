#!/usr/bin/env bash
# A fresh virtual environment for a built bento, made from the bento's own lock and wheels
# (its env/python/install.sh, with uv), so it serves without any checkout:
#   scripts/bento_env.sh "$(bentoml get ferops:latest -o path)" /opt/ferops-env
#   /opt/ferops-env/bin/bentoml serve ferops:latest
# PYTHON: the Python 3.11 to base the environment on (default python3.11); UV: the uv binary
# (default: uv on PATH). Needs PyPI, or a mirror set in UV_INDEX_URL.
set -euo pipefail
bento=$(realpath "$1")
venv=$2
PYTHON=${PYTHON:-python3.11}
UV=${UV:-$(command -v uv)}
"$PYTHON" -m venv --without-pip "$venv"
venv=$(realpath "$venv")
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
ln -s "$UV" "$tools/uv"
# Only the new environment and uv on PATH: nothing of the building environment leaks in.
env -i HOME="$HOME" PATH="$venv/bin:$tools:/usr/bin:/bin" VIRTUAL_ENV="$venv" \
  SSL_CERT_FILE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" \
  ${UV_INDEX_URL:+UV_INDEX_URL="$UV_INDEX_URL"} \
  bash "$bento/env/python/install.sh"
