#!/usr/bin/env bash
# Install everything mamext needs into a virtual environment (default .venv,
# override with MAMEXT_VENV): the CPU build of torch, the build tools, the
# runtime and test dependencies, then mamext itself, compiled against that torch.
# Idempotent: re-running rebuilds only what changed (build/ is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MAMEXT_VENV:-.venv}
python=${PYTHON:-python3}
torch_version=${MAMEXT_TORCH_VERSION:-2.13.0}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" "torch==$torch_version"
"${pip[@]}" "scikit-build-core>=0.10" "pybind11>=2.12" ninja \
  pytest hypothesis numpy scikit-learn tqdm matplotlib
# --no-build-isolation: compile against the torch installed above (an isolated
# build would fetch another torch and the extension would not load).
"${pip[@]}" --no-build-isolation .
"$venv/bin/python" -c "import mamext; print('mamext', mamext.__version__, 'cpu kernels:', mamext.cpu_capability())"
