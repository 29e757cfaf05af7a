"""Sliding-window geometry (convolutions, pooling) of one (C, H, W) sample, as the C runtime's ``mamrt_window``."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Tuple

from torch.nn.modules.utils import _pair

from ._args import check_c_size
from ._c_text import CStruct

_WHERE = "mamext.export.to_c"


@dataclass(frozen=True)
class Window:
    """Field for field the C struct ``mamrt_window`` (mam_runtime_window.h); ``p_h``/``p_w`` pad before."""

    c_in: int
    h: int
    w: int
    c_out: int
    h_out: int
    w_out: int
    k_h: int
    k_w: int
    s_h: int
    s_w: int
    p_h: int
    p_w: int
    d_h: int
    d_w: int
    groups: int

    @property
    def patch(self) -> int:
        """Inputs of one output: c_in / groups * k_h * k_w."""
        return self.c_in // self.groups * self.k_h * self.k_w

    @property
    def out_shape(self) -> Tuple[int, int, int]:
        return self.c_out, self.h_out, self.w_out

    def struct(self, name: str) -> CStruct:
        return CStruct("mamrt_window", name, list(astuple(self)))


def window(qual: str, shape, c_out: int, kernel, stride, padding4, dilation, groups: int) -> Window:
    """The window of a layer on activations of per-sample ``shape`` (C, H, W); clear errors naming ``qual``."""
    if len(shape) != 3:
        raise ValueError(f"{_WHERE}: layer '{qual}' needs per-sample activations of shape (C, H, W), got "
                         f"{tuple(shape)} (input_shape wrong, or a Flatten before it?)")
    c_in, h, w = shape
    (k_h, k_w), (s_h, s_w), (d_h, d_w) = _pair(kernel), _pair(stride), _pair(dilation)
    top, left, bottom, right = padding4
    h_out = (h + top + bottom - d_h * (k_h - 1) - 1) // s_h + 1
    w_out = (w + left + right - d_w * (k_w - 1) - 1) // s_w + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"{_WHERE}: layer '{qual}': the (dilated) kernel {(k_h, k_w)} does not fit the padded "
                         f"input of shape {tuple(shape)}")
    win = Window(c_in, h, w, c_out, h_out, w_out, k_h, k_w, s_h, s_w, top, left, d_h, d_w, groups)
    check_c_size(c_out * h_out * w_out, f"the output of layer '{qual}'")
    return win
