"""Checks for exercises/15_limits.ipynb: reliability bins, ECE, KL, top-1 flip rate, induction score.

Each check calls the student's function on its own seeded inputs (the hidden tests use other
seeds), compares with `llmcourse.interpret` (itself tested against direct formulas) and names the
classic mistakes: rounding confidences to the nearest bin, an unweighted mean over bins, a signed
gap, NaN from empty bins, KL the wrong way round or in bits, an induction head that points at the
previous copy instead of the token after it.
"""
from __future__ import annotations

import math

import torch

from llmcourse import interpret
from llmcourse.checks.core import _close, call, compare, fail, passed


def _calibration_data(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidences in [0, 1] (including exactly 1.0) and whether each prediction was right."""
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64) ** 0.5          # more weight near 1
    conf = torch.cat([conf, torch.tensor([1.0, 0.999, 0.02], dtype=torch.float64)])
    conf = conf[(conf < 0.15) | (conf >= 0.45)]                            # a gap: some bins stay empty
    right = torch.rand(conf.shape, generator=g, dtype=torch.float64) < conf ** 1.5  # overconfident
    return conf, right


def _nan_safe(x):
    """NaN -> -1 so that two tables with NaN in the same places compare equal."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return torch.nan_to_num(x.double(), nan=-1.0)
    return x


def q1(reliability_table, seed: int = 0) -> None:
    """(n_bins, 3) table: count, mean confidence, accuracy per equal-width bin; NaN in empty bins."""
    conf, right = _calibration_data(seed)
    n_bins = 10 + seed % 3
    got = call("q1", reliability_table, conf.clone(), right.clone(), n_bins)
    bins = interpret.reliability_bins(conf, right, n_bins)
    expected = torch.stack([bins.counts, bins.confidence, bins.accuracy], dim=1)
    rounded = (conf * n_bins).round().long().clamp(0, n_bins - 1)
    r_counts, r_conf, r_acc = _table(conf, right, rounded, n_bins)
    mistakes = [
        ("swapped the columns: column 1 is the mean confidence, column 2 the accuracy",
         _nan_safe(torch.stack([bins.counts, bins.accuracy, bins.confidence], 1))),
        ("rounded confidence * n_bins to the nearest bin; the bin of c is floor(c * n_bins) "
         "(and c = 1.0 goes in the last bin)", _nan_safe(torch.stack([r_counts, r_conf, r_acc], 1))),
        ("put 0 instead of NaN in empty bins", torch.nan_to_num(expected, nan=0.0)),
    ]
    for description, wrong in mistakes:
        if _close(_nan_safe(got), wrong, 1e-5, 1e-6):
            fail("q1", f"your table looks like the result of a classic mistake: {description}.")
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
        if not torch.equal(torch.isnan(got), torch.isnan(expected)):
            fail("q1", f"NaN in the wrong places: expected NaN only in the confidence and accuracy of empty bins "
                       f"(rows {torch.isnan(expected[:, 1]).nonzero().flatten().tolist()}), got NaN at "
                       f"{torch.isnan(got).nonzero().tolist()[:6]}.",
                 "an empty bin has no mean: put NaN there, and only there")
    compare("q1", _nan_safe(got), _nan_safe(expected), name=f"reliability_table(conf, correct, {n_bins})",
            hint="bin = floor(confidence * n_bins), clamped to n_bins - 1; then per bin: how many, "
                 "their mean confidence, the fraction correct")
    passed("q1", f"{n_bins} bins: counts, mean confidence and accuracy match")


def _table(conf, right, idx, n_bins):
    counts = torch.bincount(idx, minlength=n_bins).double()
    mean = lambda v: torch.where(counts > 0, torch.bincount(idx, weights=v, minlength=n_bins) / counts.clamp_min(1),
                                 torch.full_like(counts, math.nan))
    return counts, mean(conf), mean(right.double())


def _bins(seed: int):
    g = torch.Generator().manual_seed(seed)
    n_bins = 10
    counts = torch.randint(0, 60, (n_bins,), generator=g).double()
    counts[[0, 3]] = 0                                                       # two empty bins
    centers = (torch.arange(n_bins, dtype=torch.float64) + 0.5) / n_bins
    confidence = centers + (torch.rand(n_bins, generator=g, dtype=torch.float64) - 0.5) / n_bins
    accuracy = (confidence + torch.randn(n_bins, generator=g, dtype=torch.float64) * 0.15).clamp(0, 1)
    nan = torch.full_like(counts, math.nan)
    return counts, torch.where(counts > 0, confidence, nan), torch.where(counts > 0, accuracy, nan)


def q2(ece_from_bins, seed: int = 0) -> None:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b|, empty bins (NaN) contributing nothing."""
    counts, confidence, accuracy = _bins(seed)
    got = call("q2", ece_from_bins, counts.clone(), accuracy.clone(), confidence.clone())
    used = counts > 0
    gap = (accuracy - confidence)[used]
    w = counts[used] / counts.sum()
    expected = float((w * gap.abs()).sum())
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = float(got)
    if isinstance(got, float) and math.isnan(got):
        fail("q2", "your ECE is NaN: the empty bins (count 0) have NaN accuracy and confidence, and NaN * 0 is still NaN.",
             "leave empty bins out (keep only bins with counts > 0) before summing")
    compare("q2", got, expected, name="ece_from_bins(...)", mistakes=[
        ("an unweighted mean of |accuracy - confidence| over the bins; weight each bin by its share n_b / N",
         float(gap.abs().mean())),
        ("an unweighted mean over all n_bins bins; weight each bin by its share n_b / N",
         float(gap.abs().sum() / len(counts))),
        ("forgot the absolute value: over- and under-confident bins cancel out", float((w * gap).sum())),
        ("squared the gaps; the ECE uses |accuracy - confidence|", float((w * gap ** 2).sum())),
    ])
    passed("q2", f"ECE = {expected:.4f}, weighted by bin size, empty bins skipped")


def _distributions(seed: int, rows: int = 64, vocab: int = 12):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, vocab, generator=g, dtype=torch.float64) * 2
    p = torch.softmax(z, -1)
    q = torch.softmax(z + torch.randn(rows, vocab, generator=g, dtype=torch.float64) * 0.8, -1)
    return p, q


def q3(kl, seed: int = 0) -> None:
    """KL(p || q) over the last axis, in nats, with 0 log 0 = 0."""
    p, q = _distributions(seed)
    got = call("q3", kl, p.clone(), q.clone())
    expected = torch.nn.functional.kl_div(q.log(), p, reduction="none").sum(-1)  # PyTorch: input log q, target p
    compare("q3", got, expected, name="kl(p, q)", mistakes=[
        ("computed KL(q || p): the arguments the wrong way round (KL is not symmetric)",
         interpret.kl_divergence(q, p)),
        ("used log2: the answer should be in nats (natural log)", expected / math.log(2)),
        ("summed over every row into one number; return one KL per row (sum over the last axis only)",
         expected.sum()),
        ("averaged over the vocabulary instead of summing", expected / p.shape[-1]),
    ], hint="sum_i p_i (log p_i - log q_i) over the last axis")
    p[0, :3] = 0.0
    p[0] /= p[0].sum()                                                      # some zero probabilities in p
    got = call("q3", kl, p.clone(), q.clone())
    compare("q3", got, torch.nn.functional.kl_div(q.log(), p, reduction="none").sum(-1),
            name="kl(p, q) with some p_i = 0",
            hint="where p_i = 0 the term is 0 (0 log 0 = 0): use torch.where(p > 0, ..., 0), "
                 "because p * log(p) gives 0 * -inf = NaN")
    passed("q3", "KL(p || q) matches torch.nn.functional.kl_div, zeros in p handled")


def q4(top1_flip_rate, seed: int = 0) -> None:
    """Fraction of rows whose argmax differs between p and q."""
    p, q = _distributions(seed + 100)
    got = call("q4", top1_flip_rate, p.clone(), q.clone())
    expected = float((p.argmax(-1) != q.argmax(-1)).double().mean())
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = float(got)
    compare("q4", got, expected, name="top1_flip_rate(p, q)", mistakes=[
        ("returned the fraction that did NOT flip (argmax equal); the flip rate counts changes",
         1 - expected),
        ("counted the flips instead of their fraction; divide by the number of rows",
         float((p.argmax(-1) != q.argmax(-1)).sum())),
        ("took the argmax over the rows (dim 0); each row is one distribution, argmax over the last axis",
         float((p.argmax(0) != q.argmax(0)).double().mean())),
    ])
    passed("q4", f"flip rate {expected:.3f}")


def _induction_weights(seed: int, heads: int = 3, L: int = 8):
    """Causal attention weights (heads, 2L, 2L): random, with head 0 a fair induction head."""
    g = torch.Generator().manual_seed(seed)
    t = 2 * L
    scores = torch.randn(heads, t, t, generator=g, dtype=torch.float64)
    i = torch.arange(L, t)
    scores[0, i, i - L + 1] += 3.0                                           # head 0: next after previous copy
    scores[1, i, i - L] += 3.0                                               # head 1: the previous copy itself
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
    return scores.softmax(-1), L


def q5(induction_score, seed: int = 0) -> None:
    """Per head: mean over queries i in [L, 2L) of weights[h, i, i - L + 1]."""
    weights, L = _induction_weights(seed, heads=3 + seed % 2, L=8 + seed % 3)
    got = call("q5", induction_score, weights.clone(), L)
    tokens = torch.arange(L).repeat(2)[None]                                # distinct segment, repeated
    expected = interpret.induction_score(weights[None], tokens)
    i = torch.arange(L, 2 * L)
    t_all = torch.arange(1, 2 * L)
    compare("q5", got, expected, name=f"induction_score(weights, L={L})", mistakes=[
        ("measured attention to the previous copy of the token (i - L), a duplicate-token head; an induction "
         "head attends to the token AFTER it (i - L + 1)", weights[:, i, i - L].mean(-1)),
        ("measured attention to i - L + 1 from every query i >= L - 1, not only the second half [L, 2L)",
         weights[:, torch.arange(L - 1, 2 * L), torch.arange(L - 1, 2 * L) - L + 1].mean(-1)),
        ("averaged over all 2L queries (the first half cannot do induction); average over i in [L, 2L) only",
         weights[:, i, i - L + 1].sum(-1) / (2 * L)),
        ("summed over the queries instead of averaging", weights[:, i, i - L + 1].sum(-1)),
        ("measured the previous-token pattern (i - 1)", weights[:, t_all, t_all - 1].mean(-1)),
    ], hint="for query i in the second half, the token after the previous copy is at i - L + 1")
    passed("q5", f"head {int(expected.argmax())} is the induction head (score {float(expected.max()):.3f})")
