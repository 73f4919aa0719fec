"""Checks for exercises/04_attention.ipynb: causal attention end to end, padding, entropy, why sqrt(d_k).

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
from llmcourse.checks.core import (_as_tensor, answered, call, choice, compare, fail, hint_giver, measured, passed,
                                   requires)

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "build", "q4": "experiment", "q5": "interpret",
                  "q6": "interpret"}

HINTS = {
    "q1": ("Three steps: compare every query with every key, weigh (a softmax per query, future keys "
           "excluded), blend the values with those weights.",
           "The scores are the dot products of queries with keys, scaled by one over the square root of the "
           "feature width; hide the future by setting the scores of keys after the query to minus infinity "
           "BEFORE the softmax, which runs over the keys (the last axis).",
           "Shape of the code: scores from q and k with the last two axes of k swapped, divided by "
           "math.sqrt of q's last size; a boolean (t, t) mask that is True strictly above the diagonal "
           "(torch.triu with diagonal=1); masked_fill with float('-inf'); softmax over dim=-1; "
           "out = weights @ v; return out, weights."),
    "q2": ("A pad is a KEY that no query should look at; which keys are pads depends on the text's length.",
           "Build a boolean (batch, 1, t) mask that is True at key positions j >= lengths[b] (compare "
           "torch.arange(t) with the lengths as a column); it broadcasts over the queries.",
           "Shape of the code: mask from torch.arange(t) >= torch.tensor(lengths) reshaped to (batch, 1, 1); "
           "scores.masked_fill(mask, float('-inf')), then softmax over the last axis."),
    "q3": ("Entropy is minus the sum of w ln w over each query's weights, with 0 ln 0 taken as 0.",
           "torch.special.xlogy(w, w) is w ln w with 0 where w = 0; sum it over the keys (the last axis) and "
           "change the sign."),
    "q4": ("Follow the recipe exactly: for each d_k, q and k from queries_and_keys(d_k); scores with "
           "and without the 1/sqrt(d_k); a softmax over the keys; your q3 entropy; the mean.",
           "weights = softmax(q @ k^T (/ sqrt(d_k) or not), dim=-1), the transpose over the last two axes; "
           "attention_entropy(weights).mean().item().",
           "Two dicts filled in one loop over check.D_KS: entropy_scaled[d_k] and entropy_unscaled[d_k]."),
    "q5": ("Look at your entropy_unscaled[256] next to ln 16 (uniform) and 0 (all weight on one key).",
           "Also look at the largest weight of each query: weights.amax(-1).mean() for the unscaled "
           "scores at d_k = 256."),
}
hint = hint_giver(HINTS)

D_KS = [4, 16, 64, 256]
N_SEQUENCES, N_TOKENS = 64, 16
SATURATED_LOOKS = ["nearly one-hot", "nearly uniform", "the same as with scaling"]


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


def _causal_qkv(seed: int):
    """q, k (batch, heads, t, d_k) and v (batch, heads, t, d_v) for a causal call: t_q = t_k, d_v = t + 1."""
    g = torch.Generator().manual_seed(seed)
    batch, heads, t, d_k = 2, 1 + seed % 3, 4 + seed % 3, 8 + 4 * (seed % 3)  # d_k != t
    return _randn(g, batch, heads, t, d_k), _randn(g, batch, heads, t, d_k), _randn(g, batch, heads, t, t + 1)


def q1(causal_attention, seed: int = 0) -> None:
    """Causal attention end to end: softmax(mask(Q K^T / sqrt(d_k))) V, returning (output, weights)."""
    q, k, v = _causal_qkv(seed)
    d_k, t = q.shape[-1], q.shape[-2]
    out, weights = attention(q, k, v, causal=True)  # the library, tested against PyTorch
    got = call("q1", causal_attention, q.clone(), k.clone(), v.clone())
    if not (isinstance(got, tuple) and len(got) == 2):
        fail("q1", f"expected a pair (output, weights), got {type(got).__name__}", "return out, weights")
    got_out, got_w = (_as_tensor(x) for x in got)
    if (got_out is not None and got_w is not None and got_out.shape == weights.shape
            and got_w.shape == out.shape and out.shape != weights.shape):
        fail("q1", f"you returned (weights, output): shapes {tuple(got_out.shape)} and {tuple(got_w.shape)}",
             "return the output first: return out, weights")
    w = _as_weights("q1", got_w, weights, "the weight matrix")
    raw = q @ k.transpose(-2, -1)                    # (b, h, t, t)
    scaled = raw / math.sqrt(d_k)
    future = causal_mask(t)                          # (t, t) True above the diagonal
    hint = "set the scores of future keys (key after query) to -inf BEFORE the softmax"
    _future_leak_failure("q1", w, future, {
        "no mask at all": scaled.softmax(-1),
        "masking with 0 instead of -inf: a score of 0 still gets weight exp(0) = 1 before normalising; "
        "use float('-inf')": scaled.masked_fill(future, 0.0).softmax(-1),
        "masking the past instead of the future (tril instead of triu): the mask must be True ABOVE the diagonal":
            scaled.masked_fill(torch.ones(t, t, dtype=torch.bool).tril(-1), float("-inf")).softmax(-1),
    }, hint)
    if torch.isnan(w).any() and torch.isnan(w[..., 0, :]).all():
        fail("q1", "the weights of position 0 are NaN: the mask hides the diagonal too, so position 0 can see "
                   "no key at all. A position may attend to itself.", "mask only the keys strictly after the query")
    after_softmax = scaled.softmax(-1).masked_fill(future, 0.0)
    if torch.allclose(w, after_softmax, atol=1e-6):
        fail("q1", "the weights of a query do not sum to 1: this looks like masking AFTER the softmax (zeroing "
                   "future weights without renormalising).", hint)
    fill = lambda x: x.masked_fill(future, float("-inf"))  # noqa: E731
    compare("q1", w, weights, name="the weight matrix", mistakes=[
        (f"the sqrt(d_k) is missing: Q K^T must be divided by sqrt(d_k) = sqrt({d_k})", fill(raw).softmax(-1)),
        (f"divided by d_k = {d_k} instead of sqrt(d_k) = {math.sqrt(d_k):.3g}", fill(raw / d_k).softmax(-1)),
        ("multiplied by sqrt(d_k) instead of dividing by it", fill(raw * math.sqrt(d_k)).softmax(-1)),
        ("softmax over the wrong axis (dim=-2, the queries): each query's weights over the keys must sum to 1",
         fill(scaled).softmax(-2)),
        ("scaled by the number of positions t instead of the feature width d_k (q.shape[-1])",
         fill(raw / math.sqrt(t)).softmax(-1)),
        ("transposed scores (K Q^T): rows must be queries and columns keys, q @ k with k's last two axes swapped",
         fill(scaled.transpose(-2, -1)).softmax(-1)),
    ])
    _check_rows("q1", w, "the weight matrix", hint)
    compare("q1", got_out, out, name="the output", mistakes=[
        ("blended with the transposed weights (weights^T V): output row i must be sum_j weights[i, j] v_j",
         weights.transpose(-2, -1) @ v),
    ], hint="each query's output is the weighted average of the values")
    passed("q1", f"causal softmax(Q K^T / sqrt(d_k)) V matches the reference; nothing leaks from the future "
                 f"({t}×{t}, d_k = {d_k})")


# --- q2: padding ---------------------------------------------------------------------------------

def q2(padded_weights, seed: int = 0) -> None:
    """Weights that give every pad key (position >= lengths[b]) weight exactly 0."""
    g = torch.Generator().manual_seed(seed)
    t = 5 + seed % 2
    lengths = [t - 2, t, 2 + seed % 2][: 2 + seed % 2]
    s = _randn(g, len(lengths), t, t) * 2                                   # (batch, t_q, t_k)
    real = torch.arange(t) < torch.tensor(lengths).unsqueeze(1)             # (batch, t_k)
    pad = ~real[:, None, :]                                                 # (batch, 1, t_k)
    expected = s.masked_fill(pad, float("-inf")).softmax(-1)
    got = call("q2", padded_weights, s.clone(), list(lengths))
    w = _as_weights("q2", got, expected, "the padded weight matrix")
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
                fail("q2", f"{what}. This looks like {description}.", hint)
        fail("q2", f"{what}; pads must get weight exactly 0.", hint)
    _check_rows("q2", w, "the padded weight matrix",
                "mask the KEYS that are padding (columns j >= lengths[b]), not the queries; keep every real key")
    compare("q2", w, expected, name="the padded weight matrix", hint=hint)
    passed("q2", f"pads get weight exactly 0 for lengths {lengths} (t = {t}); every row sums to 1")


# --- q3: entropy of the weights ------------------------------------------------------------------

def q3(attention_entropy, seed: int = 0) -> None:
    """Entropy in nats of each query's weights, -sum_j w_j ln w_j, with 0 ln 0 = 0: (..., t_q)."""
    g = torch.Generator().manual_seed(seed)
    t = 4 + seed % 3
    s = _randn(g, 2, t, t) * (1 + seed % 3)
    w = s.masked_fill(causal_mask(t), float("-inf")).softmax(-1)  # (batch, t, t) with exact zeros
    expected = -torch.special.xlogy(w, w).sum(-1)                 # (batch, t)
    got = call("q3", attention_entropy, w.clone())
    g_t = _as_tensor(got)
    if g_t is not None and g_t.shape == expected.shape and g_t.is_floating_point() and torch.isnan(g_t).any():
        fail("q3", f"{int(torch.isnan(g_t).sum())} entropies are NaN: masked weights are exactly 0 and "
                   "0 * log(0) = 0 * (-inf) = NaN.",
             "treat 0 log 0 as 0: torch.special.xlogy(w, w), or w * log(w) where w > 0")
    plogp = torch.special.xlogy(w, w)
    compare("q3", got, expected, name="the tensor of entropies", mistakes=[
        ("entropy in bits (log2); the course measures entropy in nats (natural log)", expected / math.log(2)),
        ("the minus sign is missing: entropy is -sum w ln w, which is >= 0", -expected),
        ("summed over the wrong axis (dim=-2, the queries): each query's own weights form one distribution",
         -plogp.sum(-2)),
        ("a mean over the keys instead of a sum", -plogp.mean(-1)),
    ], hint="entropy of query i: H_i = -sum_j w[i, j] ln w[i, j] (0 ln 0 = 0); ln(t_k) means uniform, 0 means one key")
    passed("q3", f"entropies in nats, from 0 (all weight on one key) up to ln({t}) = {math.log(t):.3f} (uniform)")


# --- q4: why sqrt(d_k): the experiment ------------------------------------------------------------

def saturation_run() -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """The check's own run: mean attention entropy (nats) with and without 1/sqrt(d_k), and the mean
    largest weight without it, for random unit-variance queries and keys."""
    scaled, unscaled, top = {}, {}, {}
    for d_k in D_KS:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(N_SEQUENCES, N_TOKENS, d_k, generator=g)
        k = torch.randn(N_SEQUENCES, N_TOKENS, d_k, generator=g)
        raw = q @ k.transpose(-2, -1)                               # (64, 16, 16)
        for table, s in ((scaled, raw / math.sqrt(d_k)), (unscaled, raw)):
            w = s.softmax(-1)
            table[d_k] = float(-torch.special.xlogy(w, w).sum(-1).mean())
        top[d_k] = float(raw.softmax(-1).amax(-1).mean())
    return scaled, unscaled, top


def q4(entropy_scaled, entropy_unscaled, attention_entropy) -> None:
    """Mean attention entropy over D_KS, with and without the 1/sqrt(d_k) scale."""
    requires("q4", "q3", "attention_entropy", lambda: q3(attention_entropy))
    for name, value in (("entropy_scaled", entropy_scaled), ("entropy_unscaled", entropy_unscaled)):
        answered("q4", value, name)
        if not isinstance(value, dict) or sorted(value) != D_KS:
            keys = sorted(value) if isinstance(value, dict) else type(value).__name__
            fail("q4", f"`{name}` should be a dict with the keys D_KS = {D_KS}; got {keys}")
    scaled, unscaled, _ = saturation_run()
    if all(abs(entropy_scaled[d] - unscaled[d]) < 0.05 and abs(entropy_unscaled[d] - scaled[d]) < 0.05 for d in D_KS):
        fail("q4", "your two dicts are swapped: with the 1/sqrt(d_k) scale the entropy stays near "
                   f"{scaled[D_KS[-1]]:.2f} nats for every d_k; without it, it falls")
    for d_k in D_KS:
        for name, got, expected in (("entropy_scaled", entropy_scaled[d_k], scaled[d_k]),
                                    ("entropy_unscaled", entropy_unscaled[d_k], unscaled[d_k])):
            measured("q4", got, expected, tolerance=0.05, name=f"{name}[{d_k}]",
                     what=f"mean entropy in nats at d_k = {d_k}", mistakes=[
                         ("entropy in bits (log2); measure it in nats", expected / math.log(2)),
                     ], hint="follow the recipe: q and k from queries_and_keys(d_k) for each d_k, no causal mask")
    passed("q4", f"with the scale the entropy stays near {scaled[D_KS[-1]]:.2f} nats (ln {N_TOKENS} = "
                 f"{math.log(N_TOKENS):.2f} is uniform); without it, it falls from {unscaled[D_KS[0]]:.2f} "
                 f"to {unscaled[D_KS[-1]]:.2f} as d_k grows from {D_KS[0]} to {D_KS[-1]}")


def q5(unscaled_at_256) -> None:
    """What the unscaled softmax looks like at d_k = 256."""
    _, unscaled, top = saturation_run()
    choice("q5", unscaled_at_256, "nearly one-hot", name="unscaled_at_256", options=SATURATED_LOOKS, why_not={
        "nearly uniform": f"uniform weights over {N_TOKENS} keys have entropy ln {N_TOKENS} = "
                          f"{math.log(N_TOKENS):.2f} nats; the unscaled weights have {unscaled[256]:.2f}",
        "the same as with scaling": "compare your two dicts at d_k = 256",
    })
    passed("q5", f"without the scale, at d_k = 256 each query puts on average {top[256]:.0%} of its weight on "
                 "one key: the softmax saturates, and its gradient all but vanishes")
