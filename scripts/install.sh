#!/usr/bin/env bash
# Install everything mamext needs into a virtual environment (default .venv,
# override with MAMEXT_VENV): the CPU build of torch, the build tools, the
# runtime and test dependencies, then mamext itself, compiled against that torch.
#
# Idempotent and quick when nothing changed: the pip steps are skipped when the
# venv already holds the pinned torch and every dependency, and mamext is not
# rebuilt when the sources it is built from (csrc/, CMakeLists.txt, cmake/,
# build_support/, pyproject.toml, python/) hash to the value recorded by the
# last install (a stamp file in the venv). A rebuild reuses build/ (only what
# changed is recompiled). CI=true or MAMEXT_FORCE_INSTALL=1: everything is
# (re)installed regardless.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MAMEXT_VENV:-.venv}
python=${PYTHON:-python3}
torch_version=${MAMEXT_TORCH_VERSION:-2.13.0}
deps=("scikit-build-core>=0.10" "pybind11>=2.12" ninja pytest hypothesis numpy scikit-learn tqdm matplotlib)
stamp_file="$venv/.mamext-install-stamp"
force=0
if [ "${CI:-}" = "true" ] || [ "${MAMEXT_FORCE_INSTALL:-0}" = "1" ]; then force=1; fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

# True when the venv has torch==$torch_version and every entry of deps (name>=minimum).
deps_present() {
  "$venv/bin/python" - "$torch_version" "${deps[@]}" <<'PY' 2>/dev/null
import re, sys
from importlib.metadata import PackageNotFoundError, version

def numbers(v):
    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

torch_version, *deps = sys.argv[1:]
try:
    ok = version("torch").split("+")[0] == torch_version
    for dep in deps:
        name, _, minimum = dep.partition(">=")
        ok = ok and (not minimum or numbers(version(name)) >= numbers(minimum))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

# Hash of the files mamext is built from (tracked and untracked, not ignored),
# the torch version and the interpreter.
source_hash() {
  local paths=(csrc CMakeLists.txt cmake build_support pyproject.toml python)
  {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      git ls-files -z -co --exclude-standard -- "${paths[@]}" | sort -z | xargs -0 -r sha256sum 2>/dev/null || true
    else
      find "${paths[@]}" -type f ! -name '*.so' ! -path '*/__pycache__/*' -print0 2>/dev/null |
        sort -z | xargs -0 -r sha256sum
    fi
    echo "torch $torch_version $("$venv/bin/python" -c 'import sys; print(sys.version)')"
    env | grep '^MAMEXT_WITH_CUDA=' || true
  } | sha256sum | cut -d' ' -f1
}

if [ "$force" = 1 ] || ! deps_present; then
  "${pip[@]}" "torch==$torch_version"
  "${pip[@]}" "${deps[@]}"
else
  echo "install: torch $torch_version and the dependencies are already in $venv"
fi

hash=$(source_hash)
if [ "$force" = 0 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$hash" ] &&
   "$venv/bin/python" -c "import importlib.metadata as m; m.version('mamext')" 2>/dev/null; then
  echo "install: mamext is up to date in $venv (no source change since the last install)"
else
  rm -f "$stamp_file"
  # --no-build-isolation: compile against the torch installed above (an isolated
  # build would fetch another torch and the extension would not load).
  "${pip[@]}" --no-build-isolation .
  echo "$hash" > "$stamp_file"
fi
"$venv/bin/python" -c "import mamext; print('mamext', mamext.__version__, 'cpu kernels:', mamext.cpu_capability())"
