"""Multi-head attention: several attention "perspectives" side by side, then one projection.

    input (batch, time, d_model)
      -> queries, keys, values for every head at once (one fused linear layer)
      -> split into heads: (batch, heads, time, d_head), d_head = d_model / heads
      -> attention in each head
      -> concatenate the heads: (batch, time, d_model)
      -> project to a new representation (a linear layer)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from llmcourse.attention import attention


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention, batch first, with an optional key/value cache.

    d_model: width of each token's vector.  n_heads: number of heads (must divide d_model).
    Splitting the width among heads adds no parameters: 4 d_model^2 (+ 4 d_model biases) for any n_heads.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads = d_model, n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # queries, keys, values of all heads at once
        self.proj = nn.Linear(d_model, d_model, bias=bias)     # mixes the concatenated heads

    def forward(self, x: torch.Tensor, *, causal: bool = True, kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_weights: bool = False):
        """x: (batch, time, d_model) -> (batch, time, d_model).

        kv_cache: keys and values of earlier positions, each (batch, heads, t_past, d_head); when given,
        x holds only the new positions. Returns (output, new_cache[, weights (batch, heads, t, t_past + t)]).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, time, d_model={self.d_model}); got {tuple(x.shape)}")
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_heads)
        if kv_cache is not None:
            k, v = torch.cat([kv_cache[0], k], dim=2), torch.cat([kv_cache[1], v], dim=2)
        # A single new query may look at every cached key, so it needs no mask.
        is_causal = causal and q.shape[2] > 1
        if return_weights:
            out, weights = attention(q, k, v, causal=is_causal)
        else:  # PyTorch's fused kernel: the same numbers, faster, no weights kept
            if is_causal and k.shape[2] != q.shape[2]:
                raise ValueError("a causal call with a cache takes one new position at a time")
            out, weights = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), None
        out = self.proj(rearrange(out, "b h t d -> b t (h d)"))  # concatenate heads, then project
        return (out, (k, v), weights) if return_weights else (out, (k, v))
