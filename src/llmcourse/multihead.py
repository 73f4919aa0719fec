"""Multi-head attention: several attention "perspectives" side by side, then one projection.

    input (batch, time, d_model)
      -> queries, keys, values for every head at once (one fused linear layer)
      -> split into heads: (batch, heads, time, d_head), d_head = d_model / heads
      -> attention in each head
      -> concatenate the heads: (batch, time, d_model)
      -> project to a new representation (a linear layer)

The helpers around the class name each step (`split_heads`, `merge_heads`), count its parameters
(`parameter_count`), copy weights in from PyTorch's own layer (`load_from_torch`) and measure
what a trained head looks at (`head_scores`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from llmcourse.attention import attention
from llmcourse.validate import check_int


def _check_heads(d_model: int, n_heads: int) -> None:
    check_int(d_model, "d_model")
    check_int(n_heads, "n_heads")
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}): each head gets "
                         f"d_model / n_heads = {d_model / n_heads:.4g} channels, which must be a whole number "
                         f"(divisors of {d_model}: {[h for h in range(1, d_model + 1) if d_model % h == 0][:12]})")


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(batch, time, d_model) -> (batch, heads, time, d_head): each head takes its own slice of channels.

    Head h gets channels h*d_head .. (h+1)*d_head - 1, so the pattern is "b t (h d)": heads outside,
    channels inside. With d_model=4 and 2 heads, channels [a b c d] become head 0 [a b], head 1 [c d].
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a tensor (batch, time, d_model); got shape {tuple(getattr(x, 'shape', ()))}")
    _check_heads(x.shape[-1], n_heads)
    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, time, d_head) -> (batch, time, heads * d_head): concatenate the heads' outputs.

    The inverse of `split_heads`: merge_heads(split_heads(x, h)) == x.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor (batch, heads, time, d_head); got shape {tuple(getattr(x, 'shape', ()))}")
    return rearrange(x, "b h t d -> b t (h d)")


def parameter_count(d_model: int, n_heads: int = 1, bias: bool = True) -> int:
    """Weights of one MultiHeadAttention layer: 4 d_model^2 (+ 4 d_model biases), whatever n_heads.

    Queries, keys and values are three (d_model x d_model) maps and the output projection is a
    fourth. More heads only cut the same maps into narrower slices, so n_heads does not appear:
    parameter_count(128, 1) == parameter_count(128, 16) == 66,048.
    """
    _check_heads(d_model, n_heads)
    return 4 * d_model * d_model + (4 * d_model if bias else 0)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention, batch first, with an optional key/value cache.

    d_model: width of each token's vector.  n_heads: number of heads (must divide d_model).
    Splitting the width among heads adds no parameters: 4 d_model^2 (+ 4 d_model biases) for any n_heads.

        >>> mha = MultiHeadAttention(d_model=8, n_heads=2)
        >>> out, (k, v) = mha(torch.randn(3, 5, 8))   # out (3, 5, 8); k, v (3, 2, 5, 4)
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        _check_heads(d_model, n_heads)
        self.d_model, self.n_heads = d_model, n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # queries, keys, values of all heads at once
        self.proj = nn.Linear(d_model, d_model, bias=bias)     # mixes the concatenated heads

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def _check_input(self, x, kv_cache) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a tensor (batch, time, d_model={self.d_model}); got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            hint = " (add a batch axis: x.unsqueeze(0))" if x.dim() == 2 and x.shape[-1] == self.d_model else ""
            raise ValueError(f"x must be (batch, time, d_model={self.d_model}); got {tuple(x.shape)}{hint}")
        if kv_cache is not None:
            expected = (x.shape[0], self.n_heads, "t_past", self.d_head)
            for name, cached in zip("kv", kv_cache):
                if (cached.dim() != 4 or cached.shape[0] != x.shape[0] or cached.shape[1] != self.n_heads
                        or cached.shape[3] != self.d_head):
                    raise ValueError(f"kv_cache {name} must be (batch, heads, t_past, d_head) = {expected}; "
                                     f"got {tuple(cached.shape)}")

    def forward(self, x: torch.Tensor, *, causal: bool = True, kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_weights: bool = False):
        """x: (batch, time, d_model) -> (batch, time, d_model).

        kv_cache: keys and values of earlier positions, each (batch, heads, t_past, d_head); when given,
        x holds only the new positions. Returns (output, new_cache[, weights (batch, heads, t, t_past + t)]).
        """
        self._check_input(x, kv_cache)
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_heads)
        if kv_cache is not None:
            k, v = torch.cat([kv_cache[0], k], dim=2), torch.cat([kv_cache[1], v], dim=2)
        # A single new query may look at every cached key, so it needs no mask.
        is_causal = causal and q.shape[2] > 1
        if return_weights:
            out, weights = attention(q, k, v, causal=is_causal)
        else:  # PyTorch's fused kernel: the same numbers, faster, no weights kept
            if is_causal and k.shape[2] != q.shape[2]:  # SDPA's is_causal is top-left aligned: wrong with a cache
                raise ValueError("a causal call with a cache takes one new position at a time")
            out, weights = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), None
        out = self.proj(rearrange(out, "b h t d -> b t (h d)"))  # concatenate heads, then project
        return (out, (k, v), weights) if return_weights else (out, (k, v))


@torch.no_grad()
def load_from_torch(mha: MultiHeadAttention, torch_mha: nn.MultiheadAttention) -> MultiHeadAttention:
    """Copy the weights of PyTorch's `nn.MultiheadAttention` into ours; return `mha`.

    PyTorch stores the three input maps stacked as `in_proj_weight` (3 d_model, d_model), rows in
    the order queries, keys, values, heads side by side inside each: exactly our `qkv.weight`.
    Its `out_proj` is our `proj`. After copying, both layers compute the same function.
    """
    if not isinstance(torch_mha, nn.MultiheadAttention):
        raise ValueError(f"torch_mha must be a torch.nn.MultiheadAttention; got {type(torch_mha).__name__}")
    if (torch_mha.embed_dim, torch_mha.num_heads) != (mha.d_model, mha.n_heads):
        raise ValueError(f"shapes differ: torch_mha has embed_dim={torch_mha.embed_dim}, num_heads={torch_mha.num_heads}; "
                         f"mha has d_model={mha.d_model}, n_heads={mha.n_heads}")
    if torch_mha.in_proj_weight is None:
        raise ValueError("torch_mha has separate kdim/vdim projections; only the fused in_proj_weight "
                         "(kdim = vdim = embed_dim) maps onto our qkv layer")
    if (torch_mha.in_proj_bias is None) != (mha.qkv.bias is None) or torch_mha.bias_k is not None:
        raise ValueError("bias settings differ: build both with bias=True or both with bias=False "
                         "(and add_bias_kv=False)")
    mha.qkv.weight.copy_(torch_mha.in_proj_weight)      # (3 d_model, d_model): [W_q; W_k; W_v]
    mha.proj.weight.copy_(torch_mha.out_proj.weight)    # (d_model, d_model)
    if mha.qkv.bias is not None:
        mha.qkv.bias.copy_(torch_mha.in_proj_bias)
        mha.proj.bias.copy_(torch_mha.out_proj.bias)
    return mha


def head_scores(weights: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Three numbers per head that say what kind of pattern it has, each averaged over queries t >= 1.

    weights: (batch, heads, t, t) causal attention weights of a self-attention layer.
    tokens:  (batch, t) the token ids the weights were computed on.
    Returns {name: (heads,) tensor}:
      "previous":  mean weight on position t-1 (1.0 = always looks one token back).
      "same_token": mean total weight on *earlier* positions holding the same token as the query
                   (a "find the last copy of me" head scores high).
      "entropy":   mean entropy of each query's weights divided by log(t+1), the entropy of a uniform
                   blend over the t+1 visible positions: near 1 = broad averaging, near 0 = one position.
      "same_token_uniform": what "same_token" would be for a head that blends uniformly (the baseline).
    Query 0 is left out: it can only see itself, so every head scores the same there.
    """
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be (batch, heads, t, t); got {tuple(weights.shape)}")
    b, _, t, _ = weights.shape
    if tokens.shape != (b, t):
        raise ValueError(f"tokens must be (batch, t) = {(b, t)} to match the weights; got {tuple(tokens.shape)}")
    if t < 2:
        raise ValueError(f"need at least 2 positions to score a head; got t={t}")
    w = weights[:, :, 1:, :].double()                                              # queries t >= 1
    previous = torch.diagonal(weights.double(), -1, dim1=-2, dim2=-1)              # (b, h, t-1)
    earlier = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril(-1)    # key before query
    same = (tokens[:, :, None] == tokens[:, None, :]) & earlier                    # (b, tq, tk)
    same = same[:, 1:, :].to(w.dtype)
    entropy = -(w * w.clamp_min(1e-300).log()).sum(-1)                             # (b, h, t-1), nats
    uniform = torch.log(torch.arange(2, t + 1, dtype=w.dtype, device=w.device))   # log(t+1) for query t
    visible = torch.arange(2, t + 1, dtype=w.dtype, device=w.device)[:, None]     # t+1 keys for query t
    return {
        "previous": previous.mean((0, 2)),
        "same_token": (w * same[:, None]).sum(-1).mean((0, 2)),
        "entropy": (entropy / uniform).mean((0, 2)),
        "same_token_uniform": (same / visible).sum(-1).mean(),
    }
