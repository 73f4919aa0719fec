"""The unit 10 checks: they pass correct answers and name each classic mistake."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import inference as check

INF = float("-inf")


def temperature_softmax(z, theta):
    if theta == 0:
        return F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)
    return torch.softmax(z / theta, -1)


def top_k_filter(z, k):
    return z.masked_fill(z < torch.topk(z, k).values[-1], INF)


def nucleus(probs, p, keep_rule):
    sorted_p, order = probs.sort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(0, order, keep_rule(sorted_p, p))
    kept = probs * keep
    return kept / kept.sum()


def top_p_filter(probs, p):
    return nucleus(probs, p, lambda s, p: s.cumsum(0) - s < p)


def apply_penalties(z, c, presence, frequency):
    return z - c * frequency - (c > 0).to(z.dtype) * presence


def entropy_bits(probs):
    return -torch.where(probs > 0, probs * torch.log2(probs.clamp_min(1e-300)), torch.zeros_like(probs)).sum(-1)


def next_token_probs(z, counts, *, temperature, top_k, top_p, presence_penalty, frequency_penalty):
    z = apply_penalties(z, counts, presence_penalty, frequency_penalty)
    return top_p_filter(torch.softmax(top_k_filter(z / temperature, top_k), -1), top_p)


def test_correct_answers_pass(capsys):
    for seed in (0, 11, 12, 13):
        check.q1(temperature_softmax, seed=seed)
        check.q2(top_k_filter, seed=seed)
        check.q3(top_p_filter, seed=seed)
        check.q4(apply_penalties, seed=seed)
        check.q5(entropy_bits, seed=seed)
        check.q6(next_token_probs, seed=seed)
    assert capsys.readouterr().out.count("✓") == 24


@pytest.mark.parametrize("func,message", [
    (lambda z, t: torch.softmax(z, -1) / t if t else temperature_softmax(z, t), "divided the probabilities by theta"),
    (lambda z, t: torch.softmax(z, -1) if t else temperature_softmax(z, t), "renormalised: that cancels out"),
    (lambda z, t: torch.softmax(z * t, -1), "multiplied the logits by theta"),
    (lambda z, t: torch.softmax(z / t, 0) if t else temperature_softmax(z, t), r"wrong axis \(dim 0\)"),
    (lambda z, t: torch.softmax(z / t, -1), "(?s)NaN.*greedy limit"),            # theta = 0 divides by zero
    (lambda z, t: torch.softmax(z / max(t, 1e-3), -1) * 0.99 if t == 0 else torch.softmax(z / t, -1), "greedy limit"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


def keep_top(z, k, fill=INF):
    order = z.argsort(descending=True)
    return z.where(torch.zeros_like(z, dtype=torch.bool).scatter(0, order[:k], True), fill)


@pytest.mark.parametrize("func,message", [
    (lambda z, k: keep_top(z, k + 1), r"kept k \+ 1 tokens"),
    (lambda z, k: keep_top(z, max(k - 1, 1)) if k > 1 else keep_top(z, 2), "off by one"),
    (lambda z, k: keep_top(z, k, fill=0.0), "set the dropped logits to 0"),
    (lambda z, k: keep_top(-z, k).neg().nan_to_num(neginf=INF, posinf=INF), "k \\*smallest\\* logits"),
    (lambda z, k: torch.softmax(keep_top(z, k), 0), "returned probabilities"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@pytest.mark.parametrize("func,message", [
    (lambda pr, p: nucleus(pr, p, lambda s, p: s.cumsum(0) <= p), "dropped the token that crosses p"),
    (lambda pr, p: nucleus(pr, p, lambda s, p: s.cumsum(0) < p), "dropped the token that crosses p"),
    (lambda pr, p: (lambda k: k * pr[k > 0].sum())(top_p_filter(pr, p)), "forgot to renormalise"),
    (lambda pr, p: (lambda s, o: (lambda keep: pr * torch.zeros_like(keep).scatter(0, o, keep) /
                                  (pr * torch.zeros_like(keep).scatter(0, o, keep)).sum())(s.cumsum(0) - s < p))(
        *pr.sort()), "least likely token up"),
    (lambda pr, p: nucleus(pr, p, lambda s, p: s.cumsum(0) <= p) if p < 1e-3 else top_p_filter(pr, p),
     "tiny p must still keep one token"),
    (lambda pr, p: nucleus(pr, p, lambda s, p: (s.cumsum(0) - s < p) | (torch.arange(len(s)) < 2))
     if p < 1e-3 else top_p_filter(pr, p), "tiny p must still keep one token"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


@pytest.mark.parametrize("func,message", [
    (lambda z, c, pp, fp: z - c * fp - pp, "penalised tokens that were never seen"),
    (lambda z, c, pp, fp: z - (c > 0) * fp - (c > 0) * pp, "frequency penalty once per token"),
    (lambda z, c, pp, fp: z - c * fp - c * pp, "presence penalty per occurrence"),
    (lambda z, c, pp, fp: z + c * fp + (c > 0) * pp, "added the penalties"),
    (lambda z, c, pp, fp: z - c * pp - (c > 0) * fp, "swapped presence and frequency"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


@pytest.mark.parametrize("func,message", [
    (lambda p: entropy_bits(p) * math.log(2), r"returned nats"),
    (lambda p: entropy_bits(p) * math.log(2) / math.log(10), "log10"),
    (lambda p: -entropy_bits(p), "forgot the minus sign"),
    (lambda p: entropy_bits(p.T), r"wrong axis \(dim 0\)"),
    (lambda p: -(p * torch.log2(p)).sum(-1), "(?s)NaN.*0 \\* log 0"),
])
def test_q5_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)


def test_q6_names_the_wrong_order_and_missing_penalties():
    def top_p_first(z, c, *, temperature, top_k, top_p, presence_penalty, frequency_penalty):
        z = top_k_filter(apply_penalties(z, c, presence_penalty, frequency_penalty), top_k)
        kept = top_p_filter(torch.softmax(z, -1), top_p)
        return torch.softmax(kept.log() / temperature, -1)

    def penalties_after_temperature(z, c, *, temperature, top_k, top_p, presence_penalty, frequency_penalty):
        z = top_k_filter(apply_penalties(z / temperature, c, presence_penalty, frequency_penalty), top_k)
        return top_p_filter(torch.softmax(z, -1), top_p)

    def no_penalties(z, c, **settings):
        return next_token_probs(z, torch.zeros_like(c), **settings)

    for func, message in [(top_p_first, "top-p before temperature"),
                          (penalties_after_temperature, "penalties after temperature"),
                          (no_penalties, "forgot the penalties")]:
        with pytest.raises(CheckFailure, match=message):
            check.q6(func)


def test_stubs_and_crashes_name_the_question():
    def stub(*args, **kwargs):
        raise NotImplementedError("write it")

    for i, q in enumerate((check.q1, check.q2, check.q3, check.q4, check.q5, check.q6), start=1):
        with pytest.raises(CheckFailure, match=rf"^q{i}: stub is not implemented yet"):
            q(stub)
