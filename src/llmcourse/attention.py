"""Scaled dot-product attention: compare, weigh, blend.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Each query is compared with every key (a dot product, scaled by sqrt(d_k) so the scores keep unit
variance whatever the width); a softmax turns each query's scores into weights that sum to one;
the output is the weighted blend of the values.
"""
from __future__ import annotations

import math

import torch
from einops import einsum


def causal_mask(t_q: int, t_k: int | None = None, device=None) -> torch.Tensor:
    """(t_q, t_k) bool, True where a query may NOT look: keys in its future.

    With t_k > t_q (a cache of earlier keys), query i sits at position t_k - t_q + i.
    """
    t_k = t_q if t_k is None else t_k
    query_pos = torch.arange(t_q, device=device).unsqueeze(1) + (t_k - t_q)
    key_pos = torch.arange(t_k, device=device).unsqueeze(0)
    return key_pos > query_pos


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
              causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend the values, each weighted by how well its key matches the query.

    q: (..., t_q, d_k)   k: (..., t_k, d_k)   v: (..., t_k, d_v)   (leading axes: batch, heads, ...)
    mask: broadcastable to (..., t_q, t_k); bool True = may attend (as in
          torch.nn.functional.scaled_dot_product_attention), or float = added to the scores.
    causal: forbid each query to look at keys after its own position.
    Returns the output (..., t_q, d_v) and the weights (..., t_q, t_k).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share d_k (last axis); got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of positions (axis -2); got k {tuple(k.shape)}, v {tuple(v.shape)}")
    scores = einsum(q, k, "... tq d, ... tk d -> ... tq tk") / math.sqrt(q.shape[-1])  # compare
    if mask is not None:
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                             f"{tuple(scores.shape)} (..., t_q, t_k)") from None
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask.is_floating_point():
            scores = scores + mask
        else:
            raise ValueError(f"mask must be bool (True = attend) or floating point (added to scores); got {mask.dtype}")
    if causal:
        scores = scores.masked_fill(causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    weights = scores.softmax(dim=-1)                                                         # weigh
    return einsum(weights, v, "... tq tk, ... tk d -> ... tq d"), weights                   # blend
