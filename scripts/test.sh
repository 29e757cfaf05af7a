#!/usr/bin/env bash
# The whole test suite: (re)installs mamext into the virtual environment
# (scripts/install.sh) and runs pytest on tests/. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
venv=${MAMEXT_VENV:-.venv}
exec "$venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
