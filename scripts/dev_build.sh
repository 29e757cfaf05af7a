#!/usr/bin/env bash
# Developer build: compile the extension into build/dev and drop mamext/_C*.so
# next to the Python sources, so `PYTHONPATH=python` imports the working tree.
# Usage: scripts/dev_build.sh [extra cmake args]   (BUILD_DIR overrides build/dev)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/dev}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v python)" -DSKBUILD_PROJECT_VERSION=0.1.0-dev "$@" >/dev/null
cmake --build "$build" -j "${JOBS:-2}"
cp "$build"/_C*.so python/mamext/
