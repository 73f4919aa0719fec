"""Checks for exercises/12_moe.ipynb: top-k routing with a load-balancing loss, a sparse MoE layer, and
what a lopsided router does to an expert's capacity.

The build checks call the student's functions on seeded inputs (the hidden tests use other seeds)
and compare with `llmcourse.moe` (itself tested against a dense reference), naming the classic
mistakes: gates not renormalised, argmax instead of top-k, the balance loss built from the gates or
without its factor E, every expert run on every token. The experiment checks route the same
tokens themselves and compare with the student's numbers.
"""
from __future__ import annotations

import math

import torch

from llmcourse import moe as lib
from llmcourse.checks.core import answered, call, compare, fail, hint_giver, measured, passed, random_logits, requires

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("Two parts: the gates (which experts each token goes to, and with what weight) and a number that "
           "is small when the experts share the work evenly.",
           "Gates: softmax over the experts, keep each token's k largest probabilities (topk), renormalise "
           "them to sum to 1, zeros elsewhere. Loss: f_i = share of all token slots that went to expert i "
           "(count the chosen indices), P_i = mean router probability of expert i; E times the sum of f_i P_i.",
           "probs = softmax(-1); top, indices = probs.topk(k, -1); gates = zeros scattered with top / its sum; "
           "counts = bincount(indices.flatten(), minlength=E); f = counts / counts.sum(); P = probs.mean(0)."),
    "q2": ("Route every token with your q1, then let each expert work only on the tokens that chose it, and "
           "add its output, weighted by the token's gate, into the right rows.",
           "For expert e: the rows are the tokens whose `indices` contain e; run moe.experts[e] on x[rows]; "
           "multiply by gates[rows, e] (as a column) and add into out[rows] (index_add_ or +=).",
           "gates, indices, loss = route(moe.router(x), moe.top_k); out = zeros_like(x); for e, expert in "
           "enumerate(moe.experts): rows = (indices == e).any(-1).nonzero().squeeze(-1); ... ; return out, loss."),
    "q3": ("Count how many token slots each expert receives from your route, and compare with how many it can take.",
           "capacity = ceil(capacity factor x tokens x k / experts); an expert that receives more than its "
           "capacity drops the extra slots. Dropped fraction = dropped slots / all slots (tokens x k).",
           "counts = bincount of the chosen indices; dropped = (counts - capacity).clamp(min=0).sum(); "
           "divide by indices.numel(); also store the balance loss route returned, as a float."),
    "q4": ("Read the bar chart: the dashed line is the capacity; count the bars above it.",
           "A bar above the line is an expert that receives more slots than it can take.",
           "int((slot_counts > capacity).sum())"),
}
hint = hint_giver(HINTS)


def _unpack(question: str, out, what: str):
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        fail(question, f"route should return a tuple (gates, indices, balance_loss); got {type(out).__name__}",
             f"return all three: {what}")
    return out


def q1(route, seed: int = 0) -> None:
    """route(logits, k) -> (gates (N, E), indices (N, k), balance_loss 0-d), as llmcourse.moe."""
    logits = random_logits(seed, (12 + seed % 5, 6), scale=1.5)
    N, E = logits.shape
    for k in (1, 2, 3):
        gates, indices, loss = _unpack("q1", call("q1", route, logits.clone(), k),
                                       "the gates, the chosen experts and the load-balancing loss")
        expected, expected_idx, probs = lib.top_k_gating(logits, k)
        top, idx = probs.topk(k, dim=-1)
        compare("q1", gates, expected, name=f"the gates for k={k}", mistakes=[
            ("the kept probabilities are not renormalised: divide each token's k kept values by their sum",
             torch.zeros_like(probs).scatter(-1, idx, top)),
            ("only the single best expert (argmax) gets a gate; keep the k best",
             torch.zeros_like(probs).scatter(-1, idx[:, :1], 1.0)),
            ("the gates are the full softmax: zero every expert outside the token's top k", probs),
            ("kept the k LEAST probable experts; topk returns the largest", torch.zeros_like(probs).scatter(
                -1, probs.topk(k, -1, largest=False).indices,
                probs.topk(k, -1, largest=False).values / probs.topk(k, -1, largest=False).values.sum(-1, keepdim=True))),
        ], hint="each row of the gates sums to 1 and has exactly k non-zero values")
        if not isinstance(indices, torch.Tensor) or indices.shape != (N, k):
            fail("q1", f"indices should be a (tokens, k) = {(N, k)} tensor of expert numbers; got "
                       f"{type(indices).__name__} {tuple(getattr(indices, 'shape', ()))}")
        if not torch.equal(indices.sort(-1).values.long(), expected_idx.sort(-1).values):
            fail("q1", f"indices for k={k} are not each token's k most probable experts.",
                 "take them from topk over the probabilities (or the logits)")
        counts = torch.bincount(expected_idx.flatten(), minlength=E).double()
        f, P = counts / counts.sum(), probs.mean(0)
        compare("q1", loss, lib.load_balancing_loss(probs, expected_idx), name=f"the balance loss for k={k}",
                mistakes=[
            ("the factor E (the number of experts) is missing: E * sum f_i P_i is 1 when balanced", (f * P).sum()),
            ("f_i counted slots but was not divided by their total: it must be a fraction", E * (counts * P).sum()),
            ("P_i was taken from the gates instead of the router's full softmax probabilities",
             E * (f * expected.mean(0)).sum()),
            ("f_i was taken from the probabilities instead of the counts of chosen experts", E * (P * P).sum()),
            ("f_i divided the counts by the number of tokens, not by the number of slots (tokens x k)",
             E * (counts / N * P).sum()),
        ], hint="f_i: share of the token slots sent to expert i (counts / their sum); P_i: mean probability")
    passed("q1", "top-k gates renormalised, the chosen experts, and E Σ f_i P_i, for k = 1, 2, 3")


class _Counting(torch.nn.Module):
    """An expert that counts the rows it is asked to process."""

    def __init__(self, expert):
        super().__init__()
        self.expert, self.rows = expert, 0

    def forward(self, x):
        self.rows += x.reshape(-1, x.shape[-1]).shape[0]
        return self.expert(x)


def q2(moe_forward, route, seed: int = 0) -> None:
    """moe_forward(moe, x) -> (out (N, d), balance_loss): the sparse layer, each expert on its own tokens."""
    requires("q2", "q1", "route", lambda: q1(route, seed=seed))
    torch.manual_seed(seed)
    layer = lib.MoE(d_model=8, d_hidden=16, n_experts=4, top_k=2).double()
    x = random_logits(seed + 1, (20, 8), scale=1.0)
    with torch.no_grad():
        expected = layer(x)
        expected_loss = layer.aux_loss
        dense = lib.dense_reference(layer, x)
    counting = torch.nn.ModuleList([_Counting(e) for e in layer.experts])
    original = layer.experts
    layer.experts = counting
    try:
        with torch.no_grad():
            out = call("q2", moe_forward, layer, x.clone())
    finally:
        layer.experts = original
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail("q2", f"moe_forward should return a pair (output, balance_loss); got {type(out).__name__}")
    y, loss = out
    gates, _, _ = lib.top_k_gating(layer.router(x), 2)
    all_out = torch.stack([e(x) for e in original], 1)                        # (N, E, d)
    compare("q2", y, expected, name="the layer's output", mistakes=[
        ("the expert outputs were added without their gates", (all_out * (gates > 0)[..., None]).sum(1)),
        ("every expert's output was weighted by the full softmax: only the top-k experts take part, with "
         "renormalised gates", (all_out * layer.router(x).softmax(-1)[..., None]).sum(1)),
    ], hint="out[token] = sum over its k experts of gate x expert(x[token])")
    compare("q2", loss, expected_loss, name="the balance loss", hint="return the loss your route gives")
    rows = sum(e.rows for e in counting)
    if rows > x.shape[0] * 2:
        fail("q2", f"your experts processed {rows} token rows for {x.shape[0]} tokens with k = 2: the output is "
                   "right, but every expert ran on every token (a dense layer); a sparse layer runs each expert "
                   "only on the tokens routed to it.", "select the rows whose indices contain e before calling "
                                                         "the expert")
    assert torch.allclose(expected, dense)
    passed("q2", f"the sparse layer equals the dense reference and runs {rows} expert-rows for "
                 f"{x.shape[0]} tokens x top-2")


# --------------------------------------------------------------------------- q3, q4: capacity

TOKENS, EXPERTS, TOP_K, CAPACITY_FACTOR = 1024, 8, 2, 1.25


def routing_logits() -> torch.Tensor:
    """Router scores of TOKENS tokens for EXPERTS experts, from a router that prefers the first experts."""
    preference = torch.linspace(1.0, -1.0, EXPERTS, dtype=torch.float64)
    return random_logits(7, (TOKENS, EXPERTS), scale=1.0) + preference


def capacity() -> int:
    return math.ceil(CAPACITY_FACTOR * TOKENS * TOP_K / EXPERTS)


def slot_counts() -> torch.Tensor:
    _, indices, _ = lib.top_k_gating(routing_logits(), TOP_K)
    return lib.tokens_per_expert(indices, EXPERTS)


def q3(dropped_fraction, balance_loss, route) -> None:
    """The fraction of token slots dropped at CAPACITY_FACTOR, and the balance loss, for routing_logits()."""
    requires("q3", "q1", "route", lambda: q1(route))
    answered("q3", dropped_fraction, "dropped_fraction")
    counts = slot_counts()
    cap = capacity()
    dropped = int((counts - cap).clamp(min=0).sum())
    expected = dropped / (TOKENS * TOP_K)
    measured("q3", dropped_fraction, expected, tolerance=1e-6, name="dropped_fraction",
             what=f"{dropped} of {TOKENS * TOP_K} slots dropped at capacity {cap}", mistakes=[
                 ("divided by the number of tokens, not the number of slots (tokens x k)", dropped / TOKENS),
                 ("the number of dropped slots, not the fraction", float(dropped)),
                 ("counted every slot of an overfull expert as dropped, not only those beyond its capacity",
                  float(counts[counts > cap].sum()) / (TOKENS * TOP_K)),
                 ("the capacity forgot k: ceil(factor x tokens x k / experts)",
                  float((counts - math.ceil(CAPACITY_FACTOR * TOKENS / EXPERTS)).clamp(min=0).sum()) / (TOKENS * TOP_K)),
             ])
    _, indices, probs = lib.top_k_gating(routing_logits(), TOP_K)
    measured("q3", balance_loss, float(lib.load_balancing_loss(probs, indices)), tolerance=1e-6,
             name="balance_loss", what="E Σ f_i P_i for these tokens (1.0 when perfectly balanced)")
    passed("q3", f"the lopsided router drops {expected:.1%} of the slots at capacity factor {CAPACITY_FACTOR}; "
                 f"balance loss {float(lib.load_balancing_loss(probs, indices)):.3f}")


def q4(experts_over_capacity) -> None:
    """How many experts receive more slots than their capacity."""
    answered("q4", experts_over_capacity, "experts_over_capacity")
    counts, cap = slot_counts(), capacity()
    expected = int((counts > cap).sum())
    measured("q4", experts_over_capacity, expected, tolerance=0.5, name="experts_over_capacity",
             what=f"slots per expert {counts.tolist()}, capacity {cap}", mistakes=[
                 ("counted the experts at or BELOW capacity", EXPERTS - expected),
             ])
    passed("q4", f"{expected} of {EXPERTS} experts overflow; the others have room they cannot lend")
