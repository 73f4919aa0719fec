"""Scaled dot-product attention: compare, weigh, blend.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Each query is compared with every key (a dot product, scaled by sqrt(d_k) so the scores keep unit
variance whatever the width); a softmax turns each query's scores into weights that sum to one;
the output is the weighted blend of the values.

Two kinds of mask decide which keys a query may look at:

* `causal_mask(t_q, t_k)`: a language model predicts the next token, so a position may not look at
  the positions after it. True marks a *forbidden* (future) key, the convention of `masked_fill`.
  With fewer queries than keys (new tokens after a cache of earlier keys) the queries are the
  LAST t_q positions: the mask is aligned to the bottom-right corner. PyTorch's
  `scaled_dot_product_attention(is_causal=True)` aligns it to the top-left instead (query i sees
  keys 0..i), which agrees only when t_q == t_k.
* `padding_mask(lengths, t_k)`: texts of different lengths share one batch by padding the short
  ones; no query may look at a pad. True marks a key that *may* be attended to, the convention of
  `attention(mask=...)` and of `torch.nn.functional.scaled_dot_product_attention`.

Mind the opposite conventions: to pass a causal mask as `mask=`, invert it (`~causal_mask(...)`),
or simply call `attention(..., causal=True)`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import einsum

from llmcourse.validate import check_int


def causal_mask(t_q: int, t_k: int | None = None, device=None) -> torch.Tensor:
    """(t_q, t_k) bool, True where a query may NOT look: keys in its future.

    With t_k > t_q (a cache of earlier keys), query i sits at position t_k - t_q + i: the mask
    is aligned to the bottom-right corner, as a KV cache needs. (`scaled_dot_product_attention`
    with is_causal=True aligns it to the top-left, query i at position i: not the same when
    t_q != t_k.)

    >>> causal_mask(3).int()            # row = query position, column = key position
    tensor([[0, 1, 1],
            [0, 0, 1],
            [0, 0, 0]], dtype=torch.int32)
    >>> causal_mask(1, 3).int()         # one new query after two cached keys sees all three
    tensor([[0, 0, 0]], dtype=torch.int32)
    >>> causal_mask(2, 4).int()         # two new queries at positions 2 and 3 (top-left would be 0 and 1)
    tensor([[0, 0, 0, 1],
            [0, 0, 0, 0]], dtype=torch.int32)
    """
    t_k = t_q if t_k is None else t_k
    check_int(t_q, "t_q")
    check_int(t_k, "t_k")
    query_pos = torch.arange(t_q, device=device).unsqueeze(1) + (t_k - t_q)  # (t_q, 1)
    key_pos = torch.arange(t_k, device=device).unsqueeze(0)                  # (1, t_k)
    return key_pos > query_pos                                               # (t_q, t_k)


def padding_mask(lengths: Sequence[int] | torch.Tensor, t_k: int, device=None) -> torch.Tensor:
    """(batch, 1, t_k) bool, True where the key is a real token (may be attended to), False at pads.

    Text b of the batch has `lengths[b]` real tokens, followed by pads up to t_k. The middle axis
    of size 1 broadcasts over the queries, so the result can be passed straight to
    `attention(q, k, v, mask=...)` for q of shape (batch, t_q, d_k). With a heads axis,
    (batch, heads, t_q, d_k), add one: `mask[:, None]` is (batch, 1, 1, t_k).

    >>> padding_mask([2, 3], 3).int()
    tensor([[[1, 1, 0]],
    <BLANKLINE>
            [[1, 1, 1]]], dtype=torch.int32)
    """
    check_int(t_k, "t_k")
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be a 1-D sequence of ints, one per text; got {lengths.dtype} "
                         f"of shape {tuple(lengths.shape)}")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > t_k):
        raise ValueError(f"every length must be between 1 and t_k={t_k}; got {lengths.tolist()}")
    positions = torch.arange(t_k, device=device)                 # (t_k,)
    return (positions < lengths.unsqueeze(1)).unsqueeze(1)        # (batch, 1, t_k)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Refuse inputs that attention cannot blend, naming the shapes it got."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 axes (..., positions, features); got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {x.dtype} (convert with .float())")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k and v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share d_k (last axis); got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of positions (axis -2); "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch, heads, ...) axes of q, k and v must match or broadcast; "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}") from None


def _check_mask(mask: torch.Tensor, scores: torch.Tensor, dtype: torch.dtype) -> None:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor (bool or float); got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(f"mask must be bool (True = may attend) or floating point (added to the scores); got "
                         f"{mask.dtype}. A 0/1 integer mask would be added to the scores and block nothing: "
                         f"use mask.bool()")
    if mask.is_floating_point() and mask.dtype != dtype:
        raise ValueError(f"a float mask must have the dtype of q, k and v ({dtype}); got {mask.dtype}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != scores.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                         f"{tuple(scores.shape)} (..., t_q, t_k)")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
              causal: bool = False, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend the values, each weighted by how well its key matches the query.

    q: (..., t_q, d_k)   k: (..., t_k, d_k)   v: (..., t_k, d_v)   (leading axes: batch, heads, ...)
    mask: broadcastable to (..., t_q, t_k); bool True = may attend (as in
          torch.nn.functional.scaled_dot_product_attention), or float = added to the scores
          (0 = attend, -inf = never).
    causal: forbid each query to look at keys after its own position (see `causal_mask`).
    scale: multiplies the scores; default 1 / sqrt(d_k). (scale=1.0 is "unscaled" attention.)
    Returns the output (..., t_q, d_v) and the weights (..., t_q, t_k); each row of weights sums to 1.

    A query whose keys are all masked has nothing to blend (0/0): that is refused with an error.

    >>> q = k = v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])   # 2 tokens, d_k = 2
    >>> out, w = attention(q, k, v)
    >>> w.round(decimals=3)                                   # each token prefers itself
    tensor([[0.6700, 0.3300],
            [0.3300, 0.6700]])
    >>> attention(q, k, v, causal=True)[1].round(decimals=3)  # token 0 may only see itself
    tensor([[1.0000, 0.0000],
            [0.3300, 0.6700]])
    """
    _check_inputs(q, k, v)
    d_k, t_q, t_k = q.shape[-1], q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    scores = einsum(q, k, "... tq d, ... tk d -> ... tq tk") * scale                        # compare
    if mask is not None:
        _check_mask(mask, scores, q.dtype)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    if causal:
        scores = scores.masked_fill(causal_mask(t_q, t_k, device=q.device), float("-inf"))
    blocked = torch.isneginf(scores).all(dim=-1)                                           # (..., t_q)
    if blocked.any():
        where = tuple(int(i) for i in blocked.nonzero()[0])
        raise ValueError(f"query at index {where} (of scores {tuple(scores.shape)}) may attend to no key: every key "
                         f"is masked, so its weights would be 0/0. Mask only the keys that are padding, and "
                         f"with causal=True keep t_q <= t_k")
    weights = scores.softmax(dim=-1)                                                       # weigh
    return einsum(weights, v, "... tq tk, ... tk d -> ... tq d"), weights                 # blend
