#!/usr/bin/env bash
# Set up a working copy: .venv with the pinned stack, Chromium for the browser test, PostgreSQL
# and Java for the team-server and Spark tests, DVC wired,
# raw data pulled from the remote.
# Idempotent: reinstalls only when requirements.lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
stamp=.venv/.ferops-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned environment into .venv (about 2-3 minutes)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q "pip<26"
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

# The browser test (tests/test_ui.py) drives Debian's headless Chromium: a system package,
# installed once (CI runs this as root); skipped when `chromium` is already on PATH.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian's chromium for the browser test (about 1 minute)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  else
    echo "setup: WARNING chromium is missing: run \`sudo apt-get install chromium\`" \
         "(tests/test_ui.py needs it)" >&2
  fi
fi

# The team-server tests start a real PostgreSQL (Debian's `postgresql`: initdb / postgres under
# /usr/lib/postgresql) and `ferops score` runs Spark on Java 17 (Debian's default-jre-headless):
# system packages, installed once as root like chromium; skipped when already there.
want_apt=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null ||
  want_apt+=(postgresql)
command -v java >/dev/null || want_apt+=(default-jre-headless)
if [ ${#want_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian's ${want_apt[*]} (tracking-server and Spark tests, ~1 minute)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want_apt[@]}"
  else
    echo "setup: WARNING ${want_apt[*]} missing: run \`sudo apt-get install ${want_apt[*]}\`" \
         "(tests/test_team_server.py, tests/test_scoring.py and every mlflow-server test need them)" >&2
  fi
fi

.venv/bin/dvc config core.analytics false
echo "setup: pulling raw data with DVC"
.venv/bin/dvc pull -q data/raw/sfew.dvc data/raw/fer2013.dvc data/raw/zoo.dvc data/raw/ferplus.dvc
echo "setup: done"
