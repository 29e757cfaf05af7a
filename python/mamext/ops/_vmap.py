"""Batching rules (``torch.vmap``) shared by the operators.

Every MAM operator treats the leading dimensions of its input as independent
samples, so a batch over the input alone is one more leading dimension: one
call. Anything else (per-sample weights, say) runs one call per batch entry.
"""

from __future__ import annotations

import torch


def _select(value, dim, i):
    # in_dims holds an int for a batched tensor, None (or a tree of None for a
    # list argument) otherwise.
    return value.select(dim, i) if isinstance(dim, int) else value


def register_vmap(name: str, batched_input_only) -> None:
    """Register the vmap rule of ``mamext::<name>``.

    ``batched_input_only(op, in_dims, *args)`` returns the result (batch first)
    when only the leading input arguments are batched and can be passed with
    the batch as a leading dimension, or None; then the rule loops.
    """
    op = getattr(torch.ops.mamext, name).default

    def rule(info, in_dims, *args):
        result = batched_input_only(op, in_dims, *args)
        if result is None:
            results = [op(*(_select(a, d, i) for a, d in zip(args, in_dims))) for i in range(info.batch_size)]
            result = (tuple(torch.stack(r) for r in zip(*results)) if isinstance(results[0], tuple)
                      else torch.stack(results))
        out_dims = tuple(0 for _ in result) if isinstance(result, tuple) else 0
        return result, out_dims

    torch.library.register_vmap(f"mamext::{name}", rule)


def input_batched_only(op, in_dims, input, *rest):
    """Batch over `input` alone (the first argument): one call with the batch leading."""
    if not isinstance(in_dims[0], int) or any(isinstance(d, int) for d in in_dims[1:]):
        return None
    return op(input.movedim(in_dims[0], 0), *rest)
