"""Checks for exercises/12_moe.ipynb: top-k gating, load balancing, active parameters, capacity.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds) and compares with the library (`llmcourse.moe`, itself tested against a dense
reference and the Switch Transformer's formula). Messages name the classic mistakes: no
renormalisation after top-k, masking with 0 instead of -inf before a softmax, argmax instead of
top-k, every expert counted as active, the factor N_E missing, bincount without minlength.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.moe import load_balancing_loss, moe_parameter_counts, top_k_gating, tokens_per_expert


def _logits(seed: int, n: int = 6, e: int = 5) -> torch.Tensor:
    return torch.randn(n, e, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5


def q1(top_k_gates, seed: int = 0) -> None:
    """Gates (tokens, experts): softmax, keep the top k, renormalise; zero for the other experts."""
    for k in (2, 3, 1):
        logits = _logits(seed + k)
        got = call("q1", top_k_gates, logits.clone(), k)
        expected, idx, probs = top_k_gating(logits, k)
        keep = torch.zeros_like(probs).scatter(-1, idx, 1.0)
        zero_masked = logits.masked_fill(keep == 0, 0.0).softmax(-1)
        one_hot = torch.zeros_like(probs).scatter(-1, probs.argmax(-1, keepdim=True), 1.0)
        lowest = probs.topk(k, -1, largest=False)
        low = torch.zeros_like(probs).scatter(-1, lowest.indices, lowest.values / lowest.values.sum(-1, keepdim=True))
        mistakes = [
            ("the top-k probabilities were not renormalised: after keeping k of the softmax's probabilities "
             "they sum to less than 1; divide them by their sum", probs * keep),
            ("the logits of the other experts were set to 0 (not -inf) and the softmax taken after: "
             "exp(0) = 1, so the unchosen experts still get weight", zero_masked),
            ("the smallest k were kept: topk keeps the largest by default (largest=True)", low),
            ("the full softmax was returned: the experts outside the top k must get gate 0", probs),
        ]
        if k > 1:
            mistakes.insert(0, (f"argmax picks ONE expert; with k={k} the token goes to the k best "
                                "(torch.topk), each weighted by its renormalised probability", one_hot))
        compare("q1", got, expected, name=f"the gates for k={k}", mistakes=mistakes,
                hint="probs = logits.softmax(-1); values, idx = probs.topk(k, -1); "
                     "scatter values / values.sum(-1, keepdim=True) into zeros at idx")
    passed("q1", "top-k gates equal softmax -> top-k -> renormalise, for k = 1, 2, 3")


def q2(switch_loss, seed: int = 0) -> None:
    """Switch Transformer load-balancing loss: N_E * sum_i f_i * P_i with top-1 routing."""
    g = torch.Generator().manual_seed(seed + 20)
    for skew in (0.0, 2.0):
        n, e = 40, 4 + seed % 3
        logits = torch.randn(n, e, generator=g, dtype=torch.float64)
        logits[:, 0] += skew                                          # an unbalanced router
        probs = logits.softmax(-1)
        index = probs.argmax(-1)                                      # (N,) top-1
        got = call("q2", switch_loss, probs.clone(), index.clone())
        expected = load_balancing_loss(probs, index)
        counts = torch.bincount(index, minlength=e).double()
        f, P = counts / n, probs.mean(0)
        mistakes = [
            ("the factor N_E (number of experts) is missing: without it a balanced router scores 1/N_E, "
             "not 1", (f * P).sum()),
            ("f_i was computed from the probabilities instead of the counts of tokens sent to each expert",
             e * (P * P).sum()),
            ("f_i are counts, not fractions: divide the tokens per expert by the number of tokens",
             e * (counts * P).sum()),
            ("a mean over experts instead of a sum", (f * P).mean()),
        ]
        if isinstance(got, torch.Tensor) and got.dim() != 0:
            fail("q2", f"the loss must be a scalar (0-d tensor); got shape {tuple(got.shape)}",
                 "sum over the experts: N_E * (f * P).sum()")
        compare("q2", got, expected, name=f"the loss for {e} experts", mistakes=mistakes,
                hint="f = bincount(index, minlength=E) / N; P = probs.mean(0); N_E * (f * P).sum()")
    passed("q2", "load-balancing loss equals N_E * sum f_i P_i, for a balanced and a skewed router")


def q3(parameter_counts, seed: int = 0) -> None:
    """(total, active) parameters of an MoE layer: router d x E plus E (or k) experts d->h->d with biases."""
    g = torch.Generator().manual_seed(seed + 30)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    for k in (1, 2):
        d, h, E = r(4, 64), r(8, 256), r(4, 16)
        got = call("q3", parameter_counts, d, h, E, k)
        total, active = moe_parameter_counts(d, h, E, k)
        expert, router = 2 * d * h + h + d, d * E
        if not (isinstance(got, tuple) and len(got) == 2):
            fail("q3", f"return a tuple (total, active); got {got!r:.80}")
        mistakes = [
            ("every expert was counted as active: only the top_k experts run for a token", (total, total)),
            ("the router (d_model x n_experts weights) is missing", (total - router, active - router)),
            ("the router is missing from the active count: it runs for every token", (total, active - router)),
            ("the expert biases (d_hidden + d_model per expert) are missing",
             (total - E * (h + d), active - k * (h + d))),
            ("an expert has two matrices, d x h and h x d: only one was counted",
             (total - E * d * h, active - k * d * h)),
        ]
        compare("q3", got, (total, active), name=f"(total, active) for d={d}, hidden={h}, {E} experts, top-{k}",
                mistakes=mistakes, hint="expert = 2 d h + h + d; router = d E; "
                                        "total = router + E expert; active = router + k expert")
    passed("q3", "total and active parameters equal the MoE layer's, for top-1 and top-2")


def q4(count_tokens, seed: int = 0) -> None:
    """Token slots per expert from (tokens, k) indices: a histogram of length n_experts."""
    g = torch.Generator().manual_seed(seed + 40)
    E = 6
    probs = torch.rand(30, E, generator=g)
    probs[:, E - 1] = -1.0                                            # the last expert gets no tokens
    indices = probs.topk(2, -1).indices                               # (30, 2)
    got = call("q4", count_tokens, indices.clone(), E)
    expected = tokens_per_expert(indices, E)
    mistakes = [
        ("only the first column (each token's top-1) was counted: with top-k every token occupies k slots",
         torch.bincount(indices[:, 0], minlength=E)),
        ("fractions instead of counts", expected.double() / expected.sum()),
    ]
    if isinstance(got, torch.Tensor) and got.shape == (E - 1,):
        fail("q4", f"the result has length {E - 1}, expected {E}: an expert that received no tokens is missing",
             "torch.bincount(x, minlength=n_experts) keeps the empty experts at the end")
    compare("q4", got, expected, name="tokens per expert", mistakes=mistakes,
            hint="torch.bincount(indices.flatten(), minlength=n_experts)")
    passed("q4", "tokens per expert count every slot of top-k routing, empty experts included")


def q5(capacity, seed: int = 0) -> None:
    """Expert capacity: ceil(capacity_factor * tokens * top_k / n_experts)."""
    g = torch.Generator().manual_seed(seed + 50)
    for factor in (1.25, 1.0, 2.0):
        n, E, k = int(torch.randint(50, 500, (1,), generator=g)), 7 + seed % 5, 2
        got = call("q5", capacity, n, E, k, factor)
        expected = math.ceil(factor * n * k / E)
        mistakes = [
            ("top_k is missing: each token takes k slots, so the experts share tokens * k slots",
             math.ceil(factor * n / E)),
            ("rounded down: a fractional capacity must round UP, or the balanced case already drops tokens",
             math.floor(factor * n * k / E)),
            ("the capacity factor is missing", math.ceil(n * k / E)),
            ("not rounded: capacity is a whole number of token slots", factor * n * k / E),
        ]
        compare("q5", got, expected, name=f"the capacity for {n} tokens, {E} experts, top-{k}, factor {factor}",
                mistakes=mistakes, hint="math.ceil(capacity_factor * n_tokens * top_k / n_experts)")
    passed("q5", "expert capacity equals ceil(factor x tokens x k / experts)")
