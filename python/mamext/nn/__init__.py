"""``torch.nn`` modules built on the MAM operators."""

from .modules import MAMLinear
from .schedule import VanishingContribution

__all__ = ["MAMLinear", "VanishingContribution"]
