"""``torch.nn`` modules built on the MAM operators."""

from .modules import MAMLinear

__all__ = ["MAMLinear"]
