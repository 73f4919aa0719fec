"""Checks for exercises/04_attention.ipynb: scores, weights, causal and padding masks, entropy.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds, hence other shapes), compares with a trusted reference (the library's `attention`,
itself tested against PyTorch), and names the classic mistakes: softmax over the wrong axis, a
mask that lets the future leak (saying which position saw which), a missing sqrt(d_k), K Q^T
instead of Q K^T, masking with 0 instead of -inf, 0 log 0 = NaN.
"""
from __future__ import annotations

import math

import torch

from llmcourse.attention import attention, causal_mask
from llmcourse.checks.core import _as_tensor, call, compare, fail, passed


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _qkv(seed: int, square: bool = False):
    """q (batch, heads, t_q, d_k), k (…, t_k, d_k), v (…, t_k, d_v); t_q != t_k unless square."""
    g = torch.Generator().manual_seed(seed)
    batch, heads, t_q, d_k, d_v = 2, 1 + seed % 3, 3 + seed % 3, 4 + 4 * (seed % 3), 3 + seed % 2
    t_k = t_q if square else t_q + 2 + seed % 2
    return _randn(g, batch, heads, t_q, d_k), _randn(g, batch, heads, t_k, d_k), _randn(g, batch, heads, t_k, d_v)


def _where(index: tuple[int, ...]) -> str:
    return f" (batch index {index})" if index else ""


def _as_weights(question: str, got, expected: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse answers that are not weights of the expected shape at all, with the usual messages."""
    g = _as_tensor(got)
    if g is None or g.shape != expected.shape or not g.is_floating_point():
        compare(question, got, expected, name=name)  # raises with the shape / type / dtype message
    return g.detach().double()


def _leak(weights: torch.Tensor, forbidden: torch.Tensor, tol: float = 1e-6):
    """The largest weight on a forbidden key: (batch index, query, key, weight) or None."""
    leaked = torch.nan_to_num(weights).masked_fill(~forbidden, 0)
    if leaked.max() <= tol:
        return None
    flat = int(leaked.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), leaked.shape))
    return index[:-2], index[-2], index[-1], float(leaked.flatten()[flat])


def _check_rows(question: str, w: torch.Tensor, name: str, hint: str) -> None:
    """NaN rows and rows that do not sum to 1, reported with the first row concerned."""
    nan_rows = torch.isnan(w).any(-1)
    if nan_rows.any():
        index = tuple(int(i) for i in nan_rows.nonzero()[0])
        fail(question, f"{name} has NaN in row {index[-1]}{_where(index[:-1])}: that query could see no key at all "
                       f"(every score -inf, so softmax divides 0 by 0).", hint)
    sums = w.sum(-1)
    off = ~torch.isclose(sums, torch.ones_like(sums), atol=1e-6)
    if off.any():
        index = tuple(int(i) for i in off.nonzero()[0])
        fail(question, f"the weights of query {index[-1]}{_where(index[:-1])} sum to {float(sums[index]):.3f}, not 1: "
                       f"each query's weights must be a probability distribution over the keys.", hint)


# --- q1: compare ---------------------------------------------------------------------------------

def q1(scores, seed: int = 0) -> None:
    """Scaled scores Q K^T / sqrt(d_k): (..., t_q, t_k)."""
    q, k, _ = _qkv(seed)
    d_k = q.shape[-1]
    got = call("q1", scores, q.clone(), k.clone())
    raw = q @ k.transpose(-2, -1)  # (b, h, t_q, t_k)
    compare("q1", got, raw / math.sqrt(d_k), name="the score matrix", mistakes=[
        (f"the sqrt(d_k) is missing: Q K^T must be divided by sqrt(d_k) = sqrt({d_k})", raw),
        (f"divided by d_k = {d_k} instead of sqrt(d_k) = {math.sqrt(d_k):.3g}", raw / d_k),
        (f"multiplied by sqrt(d_k) instead of dividing by it", raw * math.sqrt(d_k)),
        ("divided by the square root of the number of keys t_k; the scale comes from the feature width d_k "
         "(q.shape[-1])", raw / math.sqrt(k.shape[-2])),
        ("divided by the square root of the number of queries t_q; the scale comes from the feature width d_k "
         "(q.shape[-1])", raw / math.sqrt(q.shape[-2])),
        ("transposed: you computed K Q^T (keys as rows). Rows must be queries and columns keys: "
         "q @ k.transpose(-2, -1)", raw.transpose(-2, -1) / math.sqrt(d_k)),
    ], hint="scores[..., i, j] = q_i · k_j / sqrt(d_k): one row per query, one column per key")
    passed("q1", f"scores = Q K^T / sqrt(d_k), shape {tuple(raw.shape)} = (batch, heads, t_q, t_k)")


# --- q2: weigh -----------------------------------------------------------------------------------

def q2(weights, seed: int = 0) -> None:
    """softmax of the scores over the keys (the last axis): each query's weights sum to 1."""
    g = torch.Generator().manual_seed(seed)
    s = _randn(g, 2, 3 + seed % 3, 5 + seed % 2) * 2  # (batch, t_q, t_k)
    got = call("q2", weights, s.clone())
    compare("q2", got, s.softmax(-1), name="the weight matrix", mistakes=[
        ("softmax over the wrong axis (dim=-2, the queries): each QUERY's weights over the keys must sum to 1, "
         "so normalise over the last axis (dim=-1)", s.softmax(-2)),
        ("softmax over the wrong axis (dim=0, the batch): normalise over the keys, the last axis (dim=-1)",
         s.softmax(0)),
        ("normalised over the whole tensor instead of each query's row", s.exp() / s.exp().sum()),
        ("divided the scores by their sum without exponentiating them first", s / s.sum(-1, keepdim=True)),
        ("used a sigmoid on each score: the weights of a query must compete and sum to 1, use softmax",
         torch.sigmoid(s)),
    ])
    big = s * 400  # softmax of scores in the thousands overflows exp() unless the row max is subtracted
    got = call("q2", weights, big.clone())
    compare("q2", got, big.softmax(-1), name="the weight matrix for scores in the thousands",
            hint="exp(1000) overflows to inf; subtract each row's maximum first, or use torch.softmax(dim=-1)")
    passed("q2", "each query's weights are a softmax over the keys (dim=-1) and sum to 1")


# --- q3: the causal mask -------------------------------------------------------------------------

def _future_leak_failure(question: str, w: torch.Tensor, future: torch.Tensor, wrong: dict[str, torch.Tensor],
                         hint: str) -> None:
    leak = _leak(w, future)
    if leak is None:
        return
    batch, i, j, weight = leak
    what = f"the future leaks: position {i} attends to position {j} with weight {weight:.2f}{_where(batch)}"
    for description, answer in wrong.items():
        if answer.shape == w.shape and torch.allclose(w, answer, rtol=1e-5, atol=1e-6, equal_nan=True):
            fail(question, f"{what}. This looks like {description}.", hint)
    fail(question, f"{what}; a position may only attend to itself and earlier positions.", hint)


def q3(causal_weights, seed: int = 0) -> None:
    """Causal attention weights: softmax over the keys with every future key at weight exactly 0."""
    g = torch.Generator().manual_seed(seed)
    t = 4 + seed % 3
    s = _randn(g, 2, t, t) * 2                         # (batch, t, t) scores
    future = causal_mask(t)                            # (t, t) True above the diagonal
    expected = s.masked_fill(future, float("-inf")).softmax(-1)
    got = call("q3", causal_weights, s.clone())
    w = _as_weights("q3", got, expected, "the causal weight matrix")
    hint = "set the scores of future keys (key > query, torch.triu(..., diagonal=1)) to -inf BEFORE the softmax"
    _future_leak_failure("q3", w, future, {
        "masking with 0 instead of -inf: a score of 0 still gets weight exp(0) = 1 before normalising; "
        "use float('-inf')": s.masked_fill(future, 0.0).softmax(-1),
        "masking the past instead of the future (tril instead of triu): the mask must be True ABOVE the diagonal":
            s.masked_fill(torch.ones(t, t, dtype=torch.bool).tril(-1), float("-inf")).softmax(-1),
        "no mask at all": s.softmax(-1),
    }, hint)
    if torch.isnan(w).any() and torch.isnan(w[..., 0, :]).all():
        fail("q3", "the weights of position 0 are NaN: the mask hides the diagonal too, so position 0 can see "
                   "no key at all. A position may attend to itself.",
             "mask only keys after the query: torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)")
    after_softmax = s.softmax(-1).masked_fill(future, 0.0)
    if torch.allclose(w, after_softmax, atol=1e-6):
        fail("q3", f"the weights of query 0 sum to {float(after_softmax[0, 0].sum()):.3f}, not 1: this looks like "
                   "masking AFTER the softmax (zeroing future weights without renormalising).", hint)
    if torch.allclose(w, s.masked_fill(future, float("-inf")).softmax(-2), atol=1e-6):
        fail("q3", "the softmax is over the wrong axis (dim=-2, the queries): each QUERY's weights over the keys "
                   "must sum to 1, so normalise over the last axis (dim=-1).", hint)
    _check_rows("q3", w, "the causal weight matrix", hint)
    compare("q3", w, expected, name="the causal weight matrix", hint=hint)
    passed("q3", f"no position sees its future: weights are exactly 0 above the diagonal ({t}×{t}), rows sum to 1")


# --- q4: the whole formula -----------------------------------------------------------------------

def q4(my_attention, seed: int = 0) -> None:
    """softmax(Q K^T / sqrt(d_k)) V with an optional causal mask, returning (output, weights)."""
    for causal in (False, True):
        q, k, v = _qkv(seed + 7 * causal, square=causal)
        d_k = q.shape[-1]
        out, weights = attention(q, k, v, causal=causal)  # the library, tested against PyTorch
        got = call("q4", my_attention, q.clone(), k.clone(), v.clone(), causal=causal)
        mode = "causal=True" if causal else "causal=False"
        if not (isinstance(got, tuple) and len(got) == 2):
            fail("q4", f"expected a pair (output, weights), got {type(got).__name__}", "return out, weights")
        got_out, got_w = (_as_tensor(x) for x in got)
        if (got_out is not None and got_w is not None and got_out.shape == weights.shape
                and got_w.shape == out.shape and out.shape != weights.shape):
            fail("q4", f"you returned (weights, output): shapes {tuple(got_out.shape)} and {tuple(got_w.shape)}",
                 "return the output first: return out, weights")
        w = _as_weights("q4", got_w, weights, f"the weight matrix ({mode})")
        raw = q @ k.transpose(-2, -1)
        future = causal_mask(q.shape[-2], k.shape[-2])
        if causal:
            _future_leak_failure("q4", w, future, {
                "the causal argument being ignored": raw.div(math.sqrt(d_k)).softmax(-1),
                "masking with 0 instead of -inf: a score of 0 still gets weight exp(0) = 1 before normalising":
                    (raw / math.sqrt(d_k)).masked_fill(future, 0.0).softmax(-1),
            }, "with causal=True, set future scores (key > query) to -inf before the softmax")
        fill = (lambda x: x.masked_fill(future, float("-inf"))) if causal else (lambda x: x)
        compare("q4", w, weights, name=f"the weight matrix ({mode})", mistakes=[
            (f"the sqrt(d_k) is missing: divide Q K^T by sqrt({d_k})", fill(raw).softmax(-1)),
            ("softmax over the wrong axis (dim=-2, the queries): normalise each query's row, dim=-1",
             fill(raw / math.sqrt(d_k)).softmax(-2)),
        ])
        compare("q4", got_out, out, name=f"the output ({mode})", mistakes=[
            ("blended with the transposed weights (weights^T V): output row i must be sum_j weights[i, j] v_j",
             weights.transpose(-2, -1) @ v if causal else torch.empty(0)),
        ], hint="out = weights @ v: each query's output is the weighted average of the values")
    passed("q4", "softmax(Q K^T / sqrt(d_k)) V matches the reference, with and without the causal mask")


# --- q5: padding ---------------------------------------------------------------------------------

def q5(padded_weights, seed: int = 0) -> None:
    """Weights that give every pad key (position >= lengths[b]) weight exactly 0."""
    g = torch.Generator().manual_seed(seed)
    t = 5 + seed % 2
    lengths = [t - 2, t, 2 + seed % 2][: 2 + seed % 2]
    s = _randn(g, len(lengths), t, t) * 2                                   # (batch, t_q, t_k)
    real = torch.arange(t) < torch.tensor(lengths).unsqueeze(1)             # (batch, t_k)
    pad = ~real[:, None, :]                                                 # (batch, 1, t_k)
    expected = s.masked_fill(pad, float("-inf")).softmax(-1)
    got = call("q5", padded_weights, s.clone(), list(lengths))
    w = _as_weights("q5", got, expected, "the padded weight matrix")
    hint = "a key is padding if its position j >= lengths[b]; set those scores to -inf before the softmax"
    leak = _leak(w, pad.expand_as(w))
    if leak is not None:
        (b,), i, j, weight = leak
        what = (f"text {b} has {lengths[b]} real tokens, but query {i} gives the pad at position {j} "
                f"weight {weight:.2f}")
        for description, wrong in [
            ("masking with 0 instead of -inf: a score of 0 still gets weight exp(0) = 1",
             s.masked_fill(pad, 0.0).softmax(-1)),
            ("an off-by-one: position lengths[b] - 1 is the last REAL token, position lengths[b] the first pad",
             s.masked_fill(torch.arange(t) > torch.tensor(lengths).view(-1, 1, 1), float("-inf")).softmax(-1)),
            ("the mask inverted: True/False swapped, so real tokens are hidden and pads are seen",
             s.masked_fill(~pad, float("-inf")).softmax(-1)),
            ("masking the padded QUERIES (rows) instead of the padded KEYS (columns)",
             s.masked_fill(pad.transpose(-2, -1), float("-inf")).softmax(-1)),
        ]:
            if torch.allclose(w, wrong, atol=1e-6, equal_nan=True):
                fail("q5", f"{what}. This looks like {description}.", hint)
        fail("q5", f"{what}; pads must get weight exactly 0.", hint)
    _check_rows("q5", w, "the padded weight matrix",
                "mask the KEYS that are padding (columns j >= lengths[b]), not the queries; keep every real key")
    compare("q5", w, expected, name="the padded weight matrix", hint=hint)
    passed("q5", f"pads get weight exactly 0 for lengths {lengths} (t = {t}); every row sums to 1")


# --- q6: entropy of the weights ------------------------------------------------------------------

def q6(attention_entropy, seed: int = 0) -> None:
    """Entropy in nats of each query's weights, -sum_j w_j ln w_j, with 0 ln 0 = 0: (..., t_q)."""
    g = torch.Generator().manual_seed(seed)
    t = 4 + seed % 3
    s = _randn(g, 2, t, t) * (1 + seed % 3)
    w = s.masked_fill(causal_mask(t), float("-inf")).softmax(-1)  # (batch, t, t) with exact zeros
    expected = -torch.special.xlogy(w, w).sum(-1)                 # (batch, t)
    got = call("q6", attention_entropy, w.clone())
    g_t = _as_tensor(got)
    if g_t is not None and g_t.shape == expected.shape and g_t.is_floating_point() and torch.isnan(g_t).any():
        fail("q6", f"{int(torch.isnan(g_t).sum())} entropies are NaN: masked weights are exactly 0 and "
                   "0 * log(0) = 0 * (-inf) = NaN.",
             "treat 0 log 0 as 0: torch.special.xlogy(w, w), or w * log(w) where w > 0")
    plogp = torch.special.xlogy(w, w)
    compare("q6", got, expected, name="the tensor of entropies", mistakes=[
        ("entropy in bits (log2); the course measures entropy in nats (natural log)", expected / math.log(2)),
        ("the minus sign is missing: entropy is -sum w ln w, which is >= 0", -expected),
        ("summed over the wrong axis (dim=-2, the queries): each query's own weights form one distribution",
         -plogp.sum(-2)),
        ("a mean over the keys instead of a sum", -plogp.mean(-1)),
    ], hint="entropy of query i: H_i = -sum_j w[i, j] ln w[i, j] (0 ln 0 = 0); ln(t_k) means uniform, 0 means one key")
    passed("q6", f"entropies in nats, from 0 (all weight on one key) up to ln({t}) = {math.log(t):.3f} (uniform)")
