"""Checks for exercises/00_start_here.ipynb: temperature, sampling, and what low temperatures do.

Each check takes the student's function, calls it on inputs it makes itself (seeded, so the same
input every run; the hidden tests use other seeds), and compares with a trusted reference.
`q2` is the softmax check of the lesson's worked example (notebooks/00_start_here.ipynb), which
shows how a check reports a mistake; the exercise does not repeat it.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checks.core import answered, call, choice, compare, fail, hint_giver, passed, requires

QUESTION_KINDS = {"q1": "build", "q3": "build", "q4": "experiment", "q5": "interpret", "q6": "interpret"}

HINTS = {
    "q1": ("Dividing the logits by the temperature before the softmax is the whole idea; temperature 0 is "
           "the limit of that, which you cannot compute by dividing.",
           "Subtract each row's largest value before exponentiating (the result does not change, nothing "
           "overflows), and normalise over the last axis. For temperature 0, find each row's largest logit "
           "with argmax and put all the probability there.",
           "Shape of the code: if temperature == 0, build zeros shaped like the logits and scatter a 1 at each "
           "row's argmax; otherwise scale, shift by the row maximum, exponentiate, divide by the row sums "
           "(keepdim=True)."),
    "q3": ("Inverse-CDF sampling: lay the probabilities end to end on [0, 1); a uniform random number lands "
           "in token i's stretch with probability p_i.",
           "The running total (torch.cumsum) marks where each stretch ends; draw n uniform numbers with "
           "torch.rand(n, generator=generator) and find, for each, the first running total above it.",
           "torch.searchsorted(running_total, u, right=True) finds those positions for all n numbers at "
           "once; clamp the result to vocab - 1 (rounding can leave the last total a hair below 1) and "
           "return it as int64."),
    "q4": ("For each temperature, turn LOGITS into probabilities with your q1, draw 2,000 tokens with your "
           "q3, and count how often the draw is the greedy token.",
           "The greedy token is LOGITS.argmax(); the share is (draws == greedy).float().mean(). Go through "
           "TEMPERATURES and keep the temperatures whose share is at least 0.9.",
           "Of the temperatures that reach a share of 0.9, report the highest one: the warmest setting "
           "that still behaves almost like greedy decoding."),
    "q5": ("Try it: call your temperature_probs at temperature 1, 10 and 1000 and look at the rows.",
           "Dividing by a huge temperature makes every scaled logit close to 0. What does the softmax of "
           "equal scores look like?"),
}
hint = hint_giver(HINTS)

LOGITS = torch.tensor([3.0, 2.2, 1.0, 0.5, -1.0], dtype=torch.float64)  # the experiment's logits, (vocab,)
TEMPERATURES = [2.0, 1.0, 0.6, 0.45, 0.3, 0.2]
N_DRAWS = 2_000
TARGET_SHARE = 0.9
HIGH_TEMPERATURE_LIMITS = ["the greedy token", "the uniform distribution", "the distribution at temperature 1"]


def _random_logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows, cols = 2 + seed % 4, 4 + seed % 5
    return torch.randn(rows, cols, generator=g, dtype=torch.float64) * scale  # (rows, vocab)


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(logits).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)


def q1(temperature_probs, seed: int = 0) -> None:
    """softmax(logits / T) over the last axis, stable for large logits; T = 0 is the greedy one-hot."""
    logits = _random_logits(seed)
    for temperature in (1.0, 0.5, 2.0):
        given = logits.clone()
        got = call("q1", temperature_probs, given, temperature)
        expected = torch.softmax(logits / temperature, dim=-1)
        mistakes = [
            ("multiplied the logits by the temperature; divide by it (a high temperature flattens)",
             torch.softmax(logits * temperature, dim=-1)),
            ("ignored the temperature", torch.softmax(logits, dim=-1)),
            ("normalised over the wrong axis (dim 0); each row is one distribution, so use the last axis",
             torch.softmax(logits / temperature, dim=0)),
            ("divided the scaled logits by their sum without exponentiating them first",
             (logits / temperature) / (logits / temperature).sum(-1, keepdim=True)),
        ]
        compare("q1", got, expected, name=f"temperature_probs(logits, {temperature})",
                mistakes=mistakes)
        if not torch.equal(given, logits):
            fail("q1", "your function changed the logits it was given (in place)",
                 "compute a new tensor instead of modifying the input")
    big = logits * 300  # logits in the hundreds: exp() overflows unless the row maximum is subtracted
    compare("q1", call("q1", temperature_probs, big.clone(), 0.5), torch.softmax(big / 0.5, dim=-1),
            name="temperature_probs of logits in the hundreds",
            hint="exp(1000) overflows to inf; subtract each row's maximum before exponentiating")
    got = call("q1", temperature_probs, logits.clone(), 0.0)
    compare("q1", got, _greedy(logits), name="temperature_probs(logits, 0.0)",
            hint="at temperature 0 all the probability goes to each row's most likely token (a one-hot row); "
                 "dividing by 0 gives NaN or inf, so treat 0 on its own")
    passed("q1", "softmax(logits / T) for T = 0.5, 1, 2, stable in the hundreds, and greedy one-hot rows at T = 0")


def _frequencies(draws: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(draws, minlength=vocab).double() / len(draws)


def q3(sample_tokens, seed: int = 0) -> None:
    """n draws from a distribution with the given generator: reproducible, right frequencies."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64) * 1.5, dim=-1)  # (vocab,)
    n = 20_000
    first = call("q3", sample_tokens, probs.clone(), n, torch.Generator().manual_seed(seed + 1))
    if not isinstance(first, torch.Tensor) or first.shape != (n,):
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        fail("q3", f"expected a tensor of shape ({n},), got {shape}", "return one token id per draw, as a tensor")
    if first.dtype != torch.long:
        fail("q3", f"the draws have dtype {first.dtype}, expected torch.int64 token ids",
             "token ids are integers: convert with .long()")
    if int(first.min()) < 0 or int(first.max()) >= len(probs):
        fail("q3", f"drew ids from {int(first.min())} to {int(first.max())}, outside 0 .. {len(probs) - 1}",
             "a uniform number above the last running total needs clamping to vocab - 1")
    second = call("q3", sample_tokens, probs.clone(), n, torch.Generator().manual_seed(seed + 1))
    if not torch.equal(first, second):
        fail("q3", "two calls with generators seeded alike gave different draws",
             "draw every random number from `generator` (torch.rand(..., generator=generator))")
    got = _frequencies(first, len(probs))
    tolerance = 5 * math.sqrt(0.25 / n)  # five standard deviations of a share, at its widest
    if (got - probs).abs().max() <= tolerance:
        passed("q3", f"{n:,} draws, each token's share within {tolerance:.3f} of its probability, reproducible")
        return
    for description, wrong in (
            ("token i is drawn with the probability of token i - 1: an off-by-one in the search "
             "(the first running total above u is token i itself)", probs.roll(1)),
            ("token i is drawn with the probability of token i + 1: an off-by-one in the search", probs.roll(-1)),
            ("every token is equally frequent: the probabilities were not used", torch.full_like(probs, 1 / len(probs))),
    ):
        if (got - wrong).abs().max() <= tolerance:
            fail("q3", f"the shares of the draws look like a classic mistake: {description}.")
    fail("q3", f"the shares of the tokens in {n:,} draws are {[round(x, 3) for x in got.tolist()]}, "
               f"but the probabilities are {[round(x, 3) for x in probs.tolist()]} (tolerance {tolerance:.3f})",
         "compare your running totals with the probabilities; a share far off points at the stretch of [0, 1) "
         "you assigned to that token")


def _greedy_share(temperature: float) -> float:
    return float(torch.softmax(LOGITS / temperature, dim=-1)[LOGITS.argmax()])


def q4(highest_temperature_90, temperature_probs, sample_tokens) -> None:
    """The highest temperature in TEMPERATURES at which >= 90% of draws are the greedy token."""
    requires("q4", "q1", "temperature_probs", lambda: q1(temperature_probs))
    requires("q4", "q3", "sample_tokens", lambda: q3(sample_tokens))
    answered("q4", highest_temperature_90, "highest_temperature_90")
    shares = {t: _greedy_share(t) for t in TEMPERATURES}  # exact: the probability of the greedy token
    reached = [t for t in TEMPERATURES if shares[t] >= TARGET_SHARE]
    expected = max(reached)
    if not isinstance(highest_temperature_90, (int, float)) or highest_temperature_90 not in TEMPERATURES:
        fail("q4", f"`highest_temperature_90` should be one of TEMPERATURES {TEMPERATURES}, "
                   f"got {highest_temperature_90!r:.60}")
    if highest_temperature_90 == expected:
        noise = math.sqrt(TARGET_SHARE * (1 - TARGET_SHARE) / N_DRAWS)
        passed("q4", f"at temperature {expected} the greedy token has probability {shares[expected]:.3f} "
                     f"(your 2,000 draws measure it to about ±{2 * noise:.3f}); at the next warmer one, "
                     f"{min(t for t in TEMPERATURES if t > expected)}, only "
                     f"{shares[min(t for t in TEMPERATURES if t > expected)]:.3f}")
        return
    if highest_temperature_90 == min(reached):
        fail("q4", f"{highest_temperature_90} is the lowest temperature that reaches 90%; the question asks "
                   "for the highest one", "go through all the temperatures that reach 0.9 and keep the largest")
    if shares[highest_temperature_90] < TARGET_SHARE:
        fail("q4", f"at temperature {highest_temperature_90} the greedy token gets only about "
                   f"{shares[highest_temperature_90]:.0%} of the draws, below 90%",
             "measure the share at every temperature of the list, not only the first few")
    fail("q4", f"at temperature {highest_temperature_90} the greedy token gets {shares[highest_temperature_90]:.0%} "
               "of the draws, but a warmer temperature in the list also reaches 90%",
         "keep the highest temperature whose share is at least 0.9")


def q5(high_temperature_limit) -> None:
    """What sampling approaches as the temperature grows without bound."""
    choice("q5", high_temperature_limit, "the uniform distribution", name="high_temperature_limit",
           options=HIGH_TEMPERATURE_LIMITS, why_not={
               "the greedy token": "that is the limit of a temperature going down to 0, where the largest "
                                   "logit wins every time",
               "the distribution at temperature 1": "temperature 1 leaves the logits as they are; a high "
                                                    "temperature divides them towards 0",
           }, hint="look at temperature_probs(LOGITS, 1000.0): what are the five probabilities?")
    passed("q5", f"at temperature 1000 every token of LOGITS gets probability "
                 f"{float(torch.softmax(LOGITS / 1000, -1).min()):.3f} to "
                 f"{float(torch.softmax(LOGITS / 1000, -1).max()):.3f}: nearly uniform")


def q2(softmax, seed: int = 0) -> None:
    """softmax over the last axis, equal to torch.softmax; stable for large logits (the lesson's example)."""
    logits = _random_logits(seed)
    given = logits.clone()
    got = call("q2", softmax, given)
    compare("q2", got, torch.softmax(logits, dim=-1), name="softmax(logits)", mistakes=[
        ("softmax over the wrong axis (dim 0); each row is one distribution, so normalise over the last axis (dim=-1)",
         torch.softmax(logits, dim=0)),
        ("normalised over the whole tensor instead of each row; use .sum(dim=-1, keepdim=True)",
         logits.exp() / logits.exp().sum()),
        ("divided the logits by their sum without exponentiating them first", logits / logits.sum(-1, keepdim=True)),
    ])
    big = logits * 300  # logits of several hundred: exp() overflows unless the max is subtracted
    got = call("q2", softmax, big.clone())
    compare("q2", got, torch.softmax(big, dim=-1), name="softmax of large logits (hundreds)",
            hint="exp(1000) overflows to inf; subtract each row's maximum first: softmax(z) = softmax(z - max z)")
    if not torch.equal(given, logits):
        fail("q2", "your softmax changed its input in place", "compute a new tensor instead of modifying logits")
    passed("q2", "matches torch.softmax(dim=-1), also for logits in the hundreds")
