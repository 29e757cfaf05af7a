"""The experiment's small vision transformer: non-overlapping patches (4x4
patches per image, so 16 tokens), a class token, learned position
embeddings, pre-norm ``nn.TransformerEncoder`` blocks and a linear head on
the class token.

MAM goes into the first linear layer of each encoder block's MLP
(``linear1``): that layer expands each token's features and is followed by
an element-wise activation, as MAM's max + min feeds a nonlinearity in the
MAM paper's selected ViT-B/16 layers. The attention projections stay MAC:
their outputs feed a dot product and a softmax, whose scale MAM's two-term
output does not preserve, and ``nn.MultiheadAttention`` reads its
projection weights directly instead of calling linear layers.
``mam="mlp"`` (the experiment's default, ``--vit-mam mlp``) makes the
MLP's second layer (``linear2``) MAM too."""

from __future__ import annotations

import torch
from torch import nn

from .._convert import convert
from .models import MODEL_KINDS

__all__ = ["TinyViT", "build_vit", "VIT_PATCHES_PER_SIDE", "VIT_MAM_CHOICES"]

VIT_PATCHES_PER_SIDE = 4

#: ``--vit-mam``: which linear layers of each encoder block's MLP are MAM
#: (and pruned): ``linear1`` (the expansion) or ``mlp`` (both of them).
VIT_MAM_CHOICES = {"linear1": ("linear1",), "mlp": ("linear1", "linear2")}


class TinyViT(nn.Module):
    """A vision transformer for flattened single-channel ``image_shape``
    images; both sides must be divisible by ``patches_per_side``."""

    def __init__(self, image_shape, num_classes: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: int = 2, patches_per_side: int = VIT_PATCHES_PER_SIDE):
        super().__init__()
        h, w = (int(v) for v in image_shape)
        if h % patches_per_side or w % patches_per_side:
            raise ValueError(f"TinyViT: images of {h}x{w} cannot be cut into {patches_per_side}x"
                             f"{patches_per_side} patches")
        self.image_shape, self.patch = (h, w), (h // patches_per_side, w // patches_per_side)
        tokens = patches_per_side * patches_per_side
        self.embed = nn.Linear(self.patch[0] * self.patch[1], dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        block = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H*W) -> (N, tokens, patch pixels), patches in row-major order."""
        (h, w), (ph, pw) = self.image_shape, self.patch
        x = x.reshape(len(x), h // ph, ph, w // pw, pw).permute(0, 1, 3, 2, 4)
        return x.reshape(len(x), -1, ph * pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(self.patches(x))
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.encoder(t)[:, 0]))


def build_vit(kind: str, image_shape, num_classes: int, mam: str = "linear1", **kw) -> TinyViT:
    """:class:`TinyViT`; for ``kind="mam"`` the encoder blocks' MLP layers
    named by ``mam`` (a key of :data:`VIT_MAM_CHOICES`) converted to
    ``MAMLinear`` with :func:`mamext.convert`. The model carries
    ``mam_layer_names`` and ``pruned_layer_names`` (those same layers, for
    both kinds)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"build_vit: model kind must be one of {MODEL_KINDS}, got {kind!r}")
    if mam not in VIT_MAM_CHOICES:
        raise ValueError(f"build_vit: mam must be one of {', '.join(VIT_MAM_CHOICES)}, got {mam!r}")
    model = TinyViT(image_shape, num_classes, **kw)
    model.mam_layer_names = tuple(f"encoder.layers.{i}.{layer}" for i in range(len(model.encoder.layers))
                                  for layer in VIT_MAM_CHOICES[mam])
    model.pruned_layer_names = model.mam_layer_names
    if kind == "mam":
        convert(model, include=list(model.mam_layer_names))
    return model
