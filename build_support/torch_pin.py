"""scikit-build-core metadata provider: pin the runtime torch to the build's minor version.

The compiled extension links against libtorch's C++ ABI, which changes between
minor releases, so the wheel may only be installed next to the torch minor
version it was built with.
"""

from __future__ import annotations


def dynamic_metadata(field, settings=None, project=None):
    if field != "dependencies":
        raise RuntimeError(f"torch_pin only provides 'dependencies', not {field!r}")
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - build-time message
        raise RuntimeError(
            "mamext must be built against an installed torch: "
            "pip install torch first, then pip install --no-build-isolation ."
        ) from exc
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return [f"torch>={major}.{minor},<{major}.{minor + 1}"]


def get_requires_for_dynamic_metadata(settings=None):
    return []
