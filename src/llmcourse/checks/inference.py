"""Checks for exercises/10_inference.ipynb: temperature, top-k, top-p, penalties, entropy, the pipeline.

Each check calls the student's function on its own seeded inputs (the hidden tests use other
seeds), compares with `llmcourse.sampling` (itself tested against PyTorch references) and names
the classic mistakes: dividing probabilities instead of logits, a top-p that drops the token that
crosses p, penalising tokens never seen, a frequency penalty applied once instead of per count,
entropy in nats where bits were asked for.
"""
from __future__ import annotations

import math

import torch

from llmcourse import sampling
from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.data import entropy

NEG_INF = -math.inf


def _logits(seed: int, shape, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def q1(temperature_softmax, seed: int = 0) -> None:
    """softmax(z / theta) over the last axis; theta = 0 gives the one-hot of the argmax."""
    z = _logits(seed, (3 + seed % 3, 7 + seed % 4))
    for theta in (0.5, 2.0):
        got = call("q1", temperature_softmax, z.clone(), theta)
        probs = torch.softmax(z, -1)
        compare("q1", got, torch.softmax(z / theta, -1), name=f"temperature_softmax(z, {theta})", mistakes=[
            ("divided the probabilities by theta instead of the logits (softmax(z) / theta); temperature "
             "divides the scores *before* the softmax", probs / theta),
            ("divided the probabilities by theta and renormalised: that cancels out, so temperature has no "
             "effect; divide the logits z before the softmax", probs),
            ("multiplied the logits by theta instead of dividing: softmax(z * theta) gets sharper as theta grows",
             torch.softmax(z * theta, -1)),
            ("softmax over the wrong axis (dim 0); each row is one distribution", torch.softmax(z / theta, 0)),
            ("raised the probabilities to the power theta instead of 1 / theta",
             probs ** theta / (probs ** theta).sum(-1, keepdim=True)),
        ])
    got = call("q1", temperature_softmax, z.clone(), 0.0)
    compare("q1", got, sampling.greedy_distribution(z), name="temperature_softmax(z, 0)",
            hint="theta = 0 is the greedy limit: return the one-hot of the argmax (torch.nn.functional.one_hot), "
                 "without dividing by zero")
    passed("q1", "softmax(z / θ) matches, and θ = 0 is the greedy one-hot")


def q2(top_k_filter, seed: int = 0) -> None:
    """Keep the k largest logits of a (vocab,) vector; every other logit becomes -inf."""
    z = _logits(seed, (12 + seed % 5,))
    for k in (1, 3, 5):
        got = call("q2", top_k_filter, z.clone(), k)
        order = z.argsort(descending=True)

        def keep(idx):
            return torch.full_like(z, NEG_INF).scatter(0, idx, z[idx])

        off_by_one = [("kept k - 1 tokens (off by one)", keep(order[:k - 1]))] if k > 1 else []
        compare("q2", got, keep(order[:k]), name=f"top_k_filter(z, {k})", mistakes=off_by_one + [
            ("kept k + 1 tokens (off by one)", keep(order[:k + 1])),
            ("set the dropped logits to 0, but 0 is an ordinary score (exp(0) = 1): use float('-inf')",
             z.where(torch.zeros_like(z, dtype=torch.bool).scatter(0, order[:k], True), 0.0)),
            ("kept the k *smallest* logits; torch.topk returns the largest by default", keep(order[-k:])),
            ("returned probabilities; return the filtered logits (the softmax comes later)",
             torch.softmax(keep(order[:k]), 0)),
        ])
    passed("q2", "the k highest scores survive, the rest are -inf")


def _nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    kept = sampling.top_p_filter(probs.log(), p).exp()
    return kept / kept.sum()


def q3(top_p_filter, seed: int = 0) -> None:
    """Nucleus: keep the smallest set of most likely tokens whose mass reaches p, renormalised."""
    probs = torch.softmax(_logits(seed, (10 + seed % 4,), scale=1.5), 0)
    sorted_p, order = probs.sort(descending=True)
    for p in (0.5, 0.8, 0.95):
        got = call("q3", top_p_filter, probs.clone(), p)
        cum = sorted_p.cumsum(0)

        def renorm(keep_sorted):
            kept = torch.zeros_like(probs).scatter(0, order, sorted_p * keep_sorted)
            return kept / kept.sum() if kept.sum() > 0 else kept

        _empty_nucleus(got, p)
        expected = _nucleus(probs, p)
        compare("q3", got, expected, name=f"top_p_filter(probs, {p})", mistakes=[
            ("dropped the token that crosses p (kept only tokens with cumulative mass <= p); keep tokens while "
             "the mass *before* them is below p, so the crossing token stays", renorm(cum <= p)),
            ("dropped the token that crosses p (kept cumulative mass < p); the nucleus must *reach* p",
             renorm(cum < p)),
            ("forgot to renormalise: the kept probabilities must sum to 1 again", expected * probs[expected > 0].sum()),
            ("sorted from the least likely token up; sort with descending=True", _ascending(probs, p)),
        ])
    got = call("q3", top_p_filter, probs.clone(), 1e-6)
    _empty_nucleus(got, 1e-6)
    compare("q3", got, _nucleus(probs, 1e-6), name="top_p_filter(probs, 1e-6)",
            hint="a tiny p must still keep one token, the most likely: always keep the first token of the sorted list")
    passed("q3", "the nucleus reaches p, keeps the crossing token and at least one token")


def _empty_nucleus(got, p: float) -> None:
    """NaN everywhere is 0 / 0: the student's nucleus kept no token at all."""
    if isinstance(got, torch.Tensor) and got.is_floating_point() and torch.isnan(got).all():
        fail("q3", f"top_p_filter(probs, {p:g}) is all NaN: your nucleus came out empty and you divided 0 by 0. "
                   f"You probably dropped the token that crosses p (cumulative mass <= p or < p).",
             "keep a token while the mass *before* it is below p; a tiny p must still keep one token, the most likely")


def _ascending(probs: torch.Tensor, p: float) -> torch.Tensor:
    """The nucleus built from the least likely tokens up (a wrong answer)."""
    sorted_p, order = probs.sort()
    keep = (sorted_p.cumsum(0) - sorted_p) < p
    kept = torch.zeros_like(probs).scatter(0, order, sorted_p * keep)
    return kept / kept.sum()


def q4(apply_penalties, seed: int = 0) -> None:
    """OpenAI's penalties: z_j - count_j * frequency - [count_j > 0] * presence."""
    g = torch.Generator().manual_seed(seed)
    z = _logits(seed, (9,))
    counts = torch.randint(0, 4, (9,), generator=g)
    counts[0], counts[1] = 0, 3          # at least one unseen token and one seen three times
    presence, frequency = 0.6, 0.25
    got = call("q4", apply_penalties, z.clone(), counts.clone(), presence, frequency)
    c = counts.double()
    seen = (counts > 0).double()
    compare("q4", got, z - c * frequency - seen * presence, name="apply_penalties(z, counts, 0.6, 0.25)", mistakes=[
        ("penalised tokens that were never seen: the presence penalty applies only where count > 0",
         z - c * frequency - presence),
        ("applied the frequency penalty once per token instead of once per occurrence (count x frequency)",
         z - seen * frequency - seen * presence),
        ("applied the presence penalty per occurrence; it is paid once, by any token with count > 0",
         z - c * frequency - c * presence),
        ("added the penalties instead of subtracting them (that rewards repetition)",
         z + c * frequency + seen * presence),
        ("swapped presence and frequency", z - c * presence - seen * frequency),
    ])
    passed("q4", "seen tokens pay presence once and frequency per occurrence; unseen tokens are untouched")


def q5(entropy_bits, seed: int = 0) -> None:
    """Entropy in bits over the last axis, with 0 log 0 = 0."""
    probs = torch.softmax(_logits(seed, (4, 8)), -1)
    probs[0, :3] = 0.0                                   # some impossible tokens
    probs[0] /= probs[0].sum()
    probs[1] = torch.zeros(8, dtype=probs.dtype).index_fill(0, torch.tensor([2]), 1.0)  # certain: 0 bits
    got = call("q5", entropy_bits, probs.clone())
    nats = entropy(probs)
    compare("q5", got, nats / math.log(2), name="entropy_bits(probs)", mistakes=[
        ("returned nats (natural log); for bits use log2, or divide nats by ln 2", nats),
        ("used log10 (that unit is the 'hartley'); bits need log2", nats / math.log(10)),
        ("forgot the minus sign: entropy is -sum p log p, never negative", -nats / math.log(2)),
        ("summed over the wrong axis (dim 0); each row is one distribution", entropy(probs.T) / math.log(2)),
    ], hint="0 * log 0 must count as 0: use torch.where(p > 0, p * log2(p), 0), or clamp p before the log")
    passed("q5", "entropy in bits, with 0 log 0 = 0")


def q6(next_token_probs, seed: int = 0) -> None:
    """The whole pipeline on a (vocab,) vector: penalties -> temperature -> top-k -> top-p -> probabilities."""
    g = torch.Generator().manual_seed(seed)
    z = _logits(seed, (16,), scale=2.5)
    counts = torch.randint(0, 3, (16,), generator=g)
    settings = dict(temperature=0.6, top_k=8, top_p=0.85, presence_penalty=0.5, frequency_penalty=0.3)
    got = call("q6", next_token_probs, z.clone(), counts.clone(), **settings)
    expected = sampling.next_token_distribution(z, counts, **settings)
    penalised = sampling.apply_penalties(z, counts, 0.5, 0.3)
    wrong_order = [
        ("applied top-p before temperature: the nucleus must be chosen from the temperature-scaled distribution",
         torch.softmax(sampling.top_p_filter(sampling.top_k_filter(penalised, 8), 0.85) / 0.6, -1)),
        ("applied the penalties after temperature; penalties act on the raw logits, then divide by theta",
         torch.softmax(sampling.top_p_filter(sampling.top_k_filter(
             sampling.apply_penalties(z / 0.6, counts, 0.5, 0.3), 8), 0.85), -1)),
        ("applied top-p before top-k", torch.softmax(sampling.top_k_filter(
            sampling.top_p_filter(penalised / 0.6, 0.85), 8), -1)),
        ("forgot the penalties", sampling.next_token_distribution(z, **settings | {"presence_penalty": 0.0,
                                                                                   "frequency_penalty": 0.0})),
    ]
    compare("q6", got, expected, name="next_token_probs(z, counts, ...)", mistakes=wrong_order,
            hint="order: penalties on the logits, divide by theta, top-k on the logits, softmax, top-p, renormalise")
    if abs(float(torch.as_tensor(got).sum()) - 1) > 1e-6:
        fail("q6", "the probabilities do not sum to 1")
    passed("q6", "penalties → temperature → top-k → top-p, in that order")
