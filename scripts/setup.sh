#!/usr/bin/env bash
# One command from a fresh machine to the main result: installs everything
# (the Fashion-MNIST files from Debian's dataset-fashion-mnist package where
# apt is available, then scripts/install.sh) and runs `mamext experiment`.
# Extra arguments go to `mamext experiment`.
set -euo pipefail
cd "$(dirname "$0")/.."
data=/usr/share/datasets/fashion-mnist
if [ ! -d "$data" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist || \
    echo "warning: could not install dataset-fashion-mnist; use --dataset digits or --data-dir" >&2
fi
bash scripts/install.sh
venv=${MAMEXT_VENV:-.venv}
exec "$venv/bin/mamext" experiment "$@"
