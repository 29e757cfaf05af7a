#!/usr/bin/env bash
# The test suite against the installed package: scripts/install.sh (which
# skips the pip steps and the rebuild when nothing changed), then pytest.
# Extra arguments go to pytest; without a path it runs tests/ (pytest's
# testpaths), e.g.
#   bash scripts/test.sh                                  # everything
#   bash scripts/test.sh -x tests/test_cuda.py -k emulated
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
venv=${MAMEXT_VENV:-.venv}
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
