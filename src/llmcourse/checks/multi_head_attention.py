"""Checks for exercises/05_multi_head_attention.ipynb: heads, concatenation, projection, parameters.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds), compares with the library's `MultiHeadAttention` (itself tested against
`torch.nn.MultiheadAttention`), and names the classic mistakes: heads split in the wrong order,
transposed projections, a forgotten output projection, heads concatenated along the wrong axis.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange

from llmcourse.attention import attention
from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.multihead import MultiHeadAttention, parameter_count


def _randn(seed: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _sizes(seed: int) -> tuple[int, int, int, int]:
    """(batch, time, heads, d_head), varied by seed; always >= 2 heads of width >= 2."""
    return 2 + seed % 2, 4 + seed % 3, 2 + seed % 3, 2 + (seed // 3) % 3


def _shape_is(got, shape) -> bool:
    return isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(shape)


def q1(split_heads, seed: int = 0) -> None:
    """(batch, time, d_model) -> (batch, heads, time, d_head), head h = channels h*d_head .. (h+1)*d_head - 1."""
    b, t, h, d = _sizes(seed)
    x = _randn(seed, b, t, h * d)
    got = call("q1", split_heads, x.clone(), h)
    if _shape_is(got, (b, t, h, d)):
        fail("q1", f"the shape is (batch, time, heads, d_head) = {(b, t, h, d)}, expected (batch, heads, time, d_head) "
                   f"= {(b, h, t, d)}.", "after splitting the channels, move the head axis in front of time: "
                                         "rearrange(x, 'b t (h d) -> b h t d', h=n_heads)")
    compare("q1", got, rearrange(x, "b t (h d) -> b h t d", h=h), name="the heads", mistakes=[
        ("heads split in the wrong order, 'b t (d h)' instead of 'b t (h d)': head h must take one contiguous "
         "slice of channels, h*d_head .. (h+1)*d_head - 1, not every n_heads-th channel",
         rearrange(x, "b t (d h) -> b h t d", h=h)),
        ("reshaped (batch, time, d_model) straight to (batch, heads, time, d_head) without moving the time axis; "
         "that mixes different positions into one head's rows",
         x.reshape(b, h, t, d)),
    ], hint="rearrange(x, 'b t (h d) -> b h t d', h=n_heads)")
    passed("q1", f"(batch, time, d_model) {(b, t, h * d)} -> (batch, heads, time, d_head) {(b, h, t, d)}, "
                 "each head a contiguous slice of channels")


def q2(merge_heads, seed: int = 0) -> None:
    """(batch, heads, time, d_head) -> (batch, time, heads * d_head): concatenate the heads for each position."""
    b, t, h, d = _sizes(seed)
    heads = _randn(seed + 100, b, h, t, d)
    got = call("q2", merge_heads, heads.clone())
    if _shape_is(got, (b, h * t, d)):
        fail("q2", f"the shape is {(b, h * t, d)}: the heads were concatenated along the time axis, one after the other.",
             "concatenate along the channel axis, so every position keeps its own row: "
             "rearrange(heads, 'b h t d -> b t (h d)') or torch.cat(heads.unbind(1), dim=-1)")
    if _shape_is(got, (b, t, h, d)):
        fail("q2", f"the shape is (batch, time, heads, d_head) = {(b, t, h, d)}: the heads are not concatenated yet.",
             "merge the last two axes into one of size heads * d_head")
    compare("q2", got, rearrange(heads, "b h t d -> b t (h d)"), name="the concatenated heads", mistakes=[
        ("concatenated in the wrong order, 'b t (d h)' instead of 'b t (h d)': interleaves the heads' channels "
         "instead of placing head 0's block, then head 1's", rearrange(heads, "b h t d -> b t (d h)")),
        ("reshaped (batch, heads, time, d_head) straight to (batch, time, d_model) without moving the head axis "
         "next to d_head (the same as concatenating along the wrong axis, time, and reshaping); that mixes "
         "different positions into one row", heads.reshape(b, t, h * d)),
    ], hint="rearrange(heads, 'b h t d -> b t (h d)')")
    passed("q2", f"(batch, heads, time, d_head) {(b, h, t, d)} -> (batch, time, d_model) {(b, t, h * d)}")


def q3(project, seed: int = 0) -> None:
    """A linear layer the way nn.Linear stores it: y = x W^T + b, with W of shape (d_out, d_in)."""
    b, t, _, _ = _sizes(seed)
    d = 5 + seed % 3
    x, w, bias = _randn(seed, b, t, d), _randn(seed + 1, d, d), _randn(seed + 2, d)
    got = call("q3", project, x.clone(), w.clone(), bias.clone())
    compare("q3", got, x @ w.T + bias, name="project(x, W, b)", mistakes=[
        ("transposed projection, x @ W instead of x @ W.T: nn.Linear stores W as (d_out, d_in), one row per "
         "output channel", x @ w + bias),
        ("the bias is missing", x @ w.T),
        ("transposed projection and no bias", x @ w),
    ], hint="y = x @ W.T + b, the same as torch.nn.functional.linear(x, W, b)")
    w_wide, bias_wide = _randn(seed + 3, 2 * d, d), _randn(seed + 4, 2 * d)  # d_in = d, d_out = 2d
    got = call("q3", project, x.clone(), w_wide.clone(), bias_wide.clone())
    compare("q3", got, x @ w_wide.T + bias_wide, name=f"project(x, W) with W of shape (d_out={2 * d}, d_in={d})",
            hint="W is (d_out, d_in): y = x @ W.T + b has d_out channels")
    passed("q3", "y = x @ W.T + b, as nn.Linear computes it, also for a non-square W")


def _mha(x, w_qkv, b_qkv, w_o, b_o, h, *, split="b t (h d) -> b h t d", merge="b h t d -> b t (h d)",
         out_transposed=False, project=True, scale_width=None, causal=True):
    """The reference forward pass, with switches that reproduce the classic mistakes."""
    q, k, v = (rearrange(p, split, h=h) for p in (x @ w_qkv.T + b_qkv).chunk(3, dim=-1))  # (b, h, t, d_head) each
    if scale_width is not None:  # rescale the scores as if sqrt(scale_width) were the right divisor
        q = q * math.sqrt(q.shape[-1] / scale_width)
    out, _ = attention(q, k, v, causal=causal)
    out = rearrange(out, merge)                                                          # (b, t, d_model)
    if not project:
        return out
    return out @ (w_o if out_transposed else w_o.T) + b_o


def q4(multi_head_attention, seed: int = 0) -> None:
    """Causal multi-head self-attention from its weights, equal to MultiHeadAttention with the same weights."""
    b, t, h, d = _sizes(seed)
    dm = h * d
    x = _randn(seed, b, t, dm)
    mha = MultiHeadAttention(dm, h).double()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(_randn(seed + p.numel(), *p.shape) / math.sqrt(dm))
    w_qkv, b_qkv, w_o, b_o = (p.detach().clone() for p in (mha.qkv.weight, mha.qkv.bias, mha.proj.weight, mha.proj.bias))
    got = call("q4", multi_head_attention, x.clone(), w_qkv.clone(), b_qkv.clone(), w_o.clone(), b_o.clone(), h)
    with torch.no_grad():
        expected, _ = mha(x, causal=True)
    args = (x, w_qkv, b_qkv, w_o, b_o, h)
    compare("q4", got, expected, name="the output", mistakes=[
        ("the output projection is missing: after concatenating the heads, apply W_out (and b_out)",
         _mha(*args, project=False)),
        ("transposed output projection, concat @ W_out instead of concat @ W_out.T", _mha(*args, out_transposed=True)),
        ("heads split in the wrong order, 'b t (d h)' instead of 'b t (h d)' (and concatenated back the same way)",
         _mha(*args, split="b t (d h) -> b h t d", merge="b h t d -> b t (d h)")),
        ("heads split in the wrong order, 'b t (d h)' instead of 'b t (h d)'", _mha(*args, split="b t (d h) -> b h t d")),
        ("heads concatenated in the wrong order, 'b t (d h)' instead of 'b t (h d)'",
         _mha(*args, merge="b h t d -> b t (d h)")),
        ("scores divided by sqrt(d_model); each head compares vectors of width d_head, so divide by sqrt(d_head)",
         _mha(*args, scale_width=dm)),
        ("no causal mask: a position must not attend to the positions after it", _mha(*args, causal=False)),
    ], hint="project to q, k, v (x @ W_qkv.T + b_qkv, then chunk into 3), split heads, attention with causal=True "
            "in every head, concatenate, project with W_out")
    passed("q4", f"matches MultiHeadAttention(d_model={dm}, n_heads={h}) with the same weights")


def q5(mha_parameter_count, seed: int = 0) -> None:
    """Parameters of one multi-head attention layer (fused qkv + output projection), with or without biases."""
    cases = [(128, 1, True), (128, 4, True), (128, 16, True), (64, 8, False), (96, 3, True),
             (32 * (1 + seed % 3), 2 ** (seed % 4), seed % 2 == 0)]
    for d, h, bias in cases:
        got = call("q5", mha_parameter_count, d, h, bias)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = int(got.item())
        d_head = d // h
        wrong = [
            ("every head given its own full (d_model x d_model) query, key and value maps; heads split d_model, "
             "they do not copy it", h * 3 * (d * d + d * bias) + d * d + d * bias),
            ("the biases are missing (one per output channel of each linear layer)" if bias else
             "biases counted although bias=False", 4 * d * d + (0 if bias else 4 * d)),
            ("the output projection (d_model x d_model, plus d_model biases) is missing", 3 * d * d + 3 * d * bias),
            ("gave each head (d_head x d_head) maps; each head reads the whole input, so its query, key and value "
             "maps are (d_model x d_head)",
             4 * h * d_head * d_head + 4 * d * bias),
        ]
        compare("q5", got, parameter_count(d, h, bias), name=f"the count for d_model={d}, n_heads={h}, bias={bias}",
                mistakes=[(m, w) for m, w in wrong if w != parameter_count(d, h, bias)],
                hint="W_qkv is (3 d_model, d_model) and W_out (d_model, d_model); add their biases if bias=True")
    passed("q5", "4 d_model² (+ 4 d_model biases), the same for any number of heads: 66,048 at d_model=128")


def q6(previous_token_score, seed: int = 0) -> None:
    """Per head: the mean attention weight on the previous position, over the batch and queries t >= 1."""
    _, t, h, _ = _sizes(seed)
    b = h + 1  # batch size differs from the head count, so a mean over the wrong axis shows in the shape
    scores = _randn(seed, b, h, t, t) * 2
    weights = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    got = call("q6", previous_token_score, weights.clone())
    prev = torch.diagonal(weights, -1, dim1=-2, dim2=-1)  # (b, h, t-1): weight of query i on key i-1
    if _shape_is(got, (b,)):
        fail("q6", f"the shape is (batch,) = {(b,)}, expected one score per head, (heads,) = {(h,)}.",
             "average over the batch axis and the query axis, keep the head axis")
    compare("q6", got, prev.mean((0, 2)), name="the previous-token scores", mistakes=[
        ("used the main diagonal, the weight each query puts on ITSELF, not on the position before it",
         torch.diagonal(weights, 0, dim1=-2, dim2=-1).mean((0, 2))),
        ("used the diagonal above the main one (offset +1): those are future positions, always 0 under a causal mask",
         torch.zeros(h, dtype=weights.dtype)),
        ("divided by t instead of t - 1: query 0 has no previous position and must be left out of the mean",
         prev.sum(-1).mean(0) / t),
    ], hint="torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1) gives (batch, heads, t-1); average it over batch and queries")
    passed("q6", "mean weight on position t-1 per head: 1.0 for a pure previous-token head")
