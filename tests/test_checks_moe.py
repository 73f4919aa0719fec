"""The unit 12 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import moe as check


def gates(logits, k):
    probs = logits.softmax(-1)
    values, idx = probs.topk(k, -1)
    return torch.zeros_like(probs).scatter(-1, idx, values / values.sum(-1, keepdim=True))


def switch(probs, index):
    E = probs.shape[1]
    f = torch.bincount(index, minlength=E).to(probs.dtype) / len(index)
    return E * (f * probs.mean(0)).sum()


def counts(d, h, E, k):
    expert = 2 * d * h + h + d
    return d * E + E * expert, d * E + k * expert


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(gates, seed=seed)
        check.q2(switch, seed=seed)
        check.q3(counts, seed=seed)
        check.q4(lambda idx, E: torch.bincount(idx.flatten(), minlength=E), seed=seed)
        check.q5(lambda n, E, k, c: math.ceil(c * n * k / E), seed=seed)
    assert capsys.readouterr().out.count("✓") == 20


def _fails(q, func, match):
    with pytest.raises(CheckFailure, match=match):
        q(func)


def test_q1_mistakes():
    def no_renorm(logits, k):
        probs = logits.softmax(-1)
        v, i = probs.topk(k, -1)
        return torch.zeros_like(probs).scatter(-1, i, v)

    def zero_mask(logits, k):
        i = logits.topk(k, -1).indices
        keep = torch.zeros_like(logits).scatter(-1, i, 1.0)
        return logits.masked_fill(keep == 0, 0.0).softmax(-1)

    def argmax(logits, k):
        probs = logits.softmax(-1)
        return torch.zeros_like(probs).scatter(-1, probs.argmax(-1, keepdim=True), 1.0)

    def smallest(logits, k):
        probs = logits.softmax(-1)
        v, i = probs.topk(k, -1, largest=False)
        return torch.zeros_like(probs).scatter(-1, i, v / v.sum(-1, keepdim=True))

    _fails(check.q1, no_renorm, "not renormalised")
    _fails(check.q1, zero_mask, "not -inf")
    _fails(check.q1, argmax, "argmax picks ONE expert")
    _fails(check.q1, smallest, "smallest k")
    _fails(check.q1, lambda logits, k: logits.softmax(-1), "full softmax")
    # Mixtral's form (top-k on the logits, softmax over those k) is the same gate: it passes
    check.q1(lambda logits, k: torch.full_like(logits, float("-inf")).scatter(
        -1, logits.topk(k, -1).indices, logits.topk(k, -1).values).softmax(-1))


def test_q2_mistakes():
    def no_factor(probs, index):
        return switch(probs, index) / probs.shape[1]

    def f_from_probs(probs, index):
        P = probs.mean(0)
        return probs.shape[1] * (P * P).sum()

    def raw_counts(probs, index):
        E = probs.shape[1]
        return E * (torch.bincount(index, minlength=E).to(probs.dtype) * probs.mean(0)).sum()

    _fails(check.q2, no_factor, "factor N_E")
    _fails(check.q2, f_from_probs, "from the probabilities")
    _fails(check.q2, raw_counts, "counts, not fractions")
    _fails(check.q2, lambda p, i: torch.stack([switch(p, i)] * 2), "scalar")


def test_q3_mistakes():
    _fails(check.q3, lambda d, h, E, k: (counts(d, h, E, k)[0],) * 2, "every expert was counted as active")
    _fails(check.q3, lambda d, h, E, k: (E * (2 * d * h + h + d), k * (2 * d * h + h + d)), "router")
    _fails(check.q3, lambda d, h, E, k: (counts(d, h, E, k)[0], k * (2 * d * h + h + d)), "runs for every token")
    _fails(check.q3, lambda d, h, E, k: (d * E + E * 2 * d * h, d * E + k * 2 * d * h), "biases")
    _fails(check.q3, lambda d, h, E, k: (d * E + E * (d * h + h + d), d * E + k * (d * h + h + d)), "two matrices")
    _fails(check.q3, lambda d, h, E, k: counts(d, h, E, k)[0], "tuple")


def test_q4_mistakes():
    _fails(check.q4, lambda idx, E: torch.bincount(idx.flatten()), "no tokens is missing")
    _fails(check.q4, lambda idx, E: torch.bincount(idx[:, 0], minlength=E), "only the first column")
    _fails(check.q4, lambda idx, E: torch.bincount(idx.flatten(), minlength=E) / idx.numel(), "fractions")


def test_q5_mistakes():
    _fails(check.q5, lambda n, E, k, c: math.ceil(c * n / E), "top_k is missing")
    _fails(check.q5, lambda n, E, k, c: math.floor(c * n * k / E), "rounded down")
    _fails(check.q5, lambda n, E, k, c: math.ceil(n * k / E), "capacity factor is missing")
    _fails(check.q5, lambda n, E, k, c: c * n * k / E, "not rounded")
