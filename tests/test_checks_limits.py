"""The unit 15 checks: they pass correct answers and name each classic mistake."""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import limits as check


def reliability_table(conf, correct, n_bins, *, rounding=torch.floor, fill=math.nan, swap=False):
    idx = rounding(conf * n_bins).long().clamp(0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = idx == b
        n = int(members.sum())
        c = conf[members].mean().item() if n else fill
        a = correct[members].double().mean().item() if n else fill
        rows.append([n, a, c] if swap else [n, c, a])
    return torch.tensor(rows, dtype=torch.float64)


def ece_from_bins(counts, accuracy, confidence):
    used = counts > 0
    return float((counts[used] / counts.sum() * (accuracy[used] - confidence[used]).abs()).sum())


def kl(p, q):
    return torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.log()), torch.zeros_like(p)).sum(-1)


def top1_flip_rate(p, q):
    return float((p.argmax(-1) != q.argmax(-1)).double().mean())


def induction_score(weights, L):
    i = torch.arange(L, 2 * L)
    return weights[:, i, i - L + 1].mean(-1)


def test_correct_answers_pass(capsys):
    for seed in (0, 11, 12, 13, 14, 15):
        check.q1(reliability_table, seed=seed)
        check.q2(ece_from_bins, seed=seed)
        check.q3(kl, seed=seed)
        check.q4(top1_flip_rate, seed=seed)
        check.q5(induction_score, seed=seed)
    assert capsys.readouterr().out.count("✓") == 30


def test_tensor_answers_accepted():
    check.q2(lambda c, a, f: torch.tensor(ece_from_bins(c, a, f)))
    check.q4(lambda p, q: (p.argmax(-1) != q.argmax(-1)).float().mean())


@pytest.mark.parametrize("question, func, message", [
    ("q1", lambda c, r, n: reliability_table(c, r, n, swap=True), "swapped the columns"),
    ("q1", lambda c, r, n: reliability_table(c, r, n, rounding=torch.round), "rounded"),
    ("q1", lambda c, r, n: reliability_table(c, r, n, fill=0.0), "0 instead of NaN"),
    ("q1", lambda c, r, n: reliability_table(c, r, n)[:, [0, 1, 1]], "NaN in the wrong places|wrong"),
    ("q2", lambda n, a, c: float((a - c)[n > 0].abs().mean()), "unweighted mean"),
    ("q2", lambda n, a, c: float((n / n.sum() * (a - c)).nansum()), "absolute value"),
    ("q2", lambda n, a, c: float((n / n.sum() * (a - c).abs()).sum()), "NaN"),
    ("q2", lambda n, a, c: float((n / n.sum() * (a - c) ** 2).nansum()), "squared"),
    ("q3", lambda p, q: kl(q, p), "wrong way round"),
    ("q3", lambda p, q: kl(p, q) / math.log(2), "log2"),
    ("q3", lambda p, q: kl(p, q).sum(), "every row"),
    ("q3", lambda p, q: (p * (p.log() - q.log())).sum(-1), "NaN"),
    ("q4", lambda p, q: 1 - top1_flip_rate(p, q), "did NOT flip"),
    ("q4", lambda p, q: float((p.argmax(-1) != q.argmax(-1)).sum()), "counted the flips"),
    ("q4", lambda p, q: float((p.argmax(0) != q.argmax(0)).double().mean()), "over the rows"),
    ("q5", lambda w, L: w[:, torch.arange(L, 2 * L), torch.arange(L, 2 * L) - L].mean(-1), "previous copy"),
    ("q5", lambda w, L: w[:, torch.arange(L, 2 * L), torch.arange(L, 2 * L) - L + 1].sum(-1), "summed"),
    ("q5", lambda w, L: w[:, torch.arange(L, 2 * L), torch.arange(L, 2 * L) - L + 1].sum(-1) / (2 * L), "all 2L"),
    ("q5", lambda w, L: w[:, torch.arange(L - 1, 2 * L), torch.arange(L - 1, 2 * L) - L + 1].mean(-1), "every query"),
    ("q5", lambda w, L: w[:, torch.arange(1, 2 * L), torch.arange(0, 2 * L - 1)].mean(-1), "previous-token"),
])
def test_classic_mistakes_are_named(question, func, message):
    with pytest.raises(CheckFailure, match=message) as info:
        getattr(check, question)(func)
    assert str(info.value).startswith(question)


def test_stub_and_crash_fail_clearly():
    def stub(*args):
        raise NotImplementedError("write your code here")
    for q in ("q1", "q2", "q3", "q4", "q5"):
        with pytest.raises(CheckFailure, match="not implemented"):
            getattr(check, q)(stub)
    with pytest.raises(CheckFailure, match="raised ZeroDivisionError"):
        check.q2(lambda *a: 1 / 0)
