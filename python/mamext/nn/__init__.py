"""``torch.nn`` modules built on the MAM operators."""

from .conv import MAMConv1d, MAMConv2d
from .modules import MAMLinear
from .schedule import VanishingContribution

__all__ = ["MAMLinear", "MAMConv2d", "MAMConv1d", "VanishingContribution"]
