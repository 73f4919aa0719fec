"""The unit 12 checks: they pass correct answers, fail the stub and name each classic mistake."""
import math

import pytest
import torch

from llmcourse import moe as lib
from llmcourse.checks import CheckFailure
from llmcourse.checks import moe as check


def route(logits, k, *, renormalise=True, no_e=False, gates_for_p=False, per_token=False):
    probs = logits.softmax(-1)
    top, idx = probs.topk(k, -1)
    if renormalise:
        top = top / top.sum(-1, keepdim=True)
    gates = torch.zeros_like(probs).scatter(-1, idx, top)
    counts = torch.bincount(idx.flatten(), minlength=logits.shape[-1]).to(probs.dtype)
    f = counts / (logits.shape[0] if per_token else counts.sum())
    P = (gates if gates_for_p else probs).mean(0)
    return gates, idx, (1 if no_e else logits.shape[-1]) * (f * P).sum()


def moe_forward(moe, x, *, dense=False, no_gates=False):
    gates, indices, loss = route(moe.router(x), moe.top_k)
    out = torch.zeros_like(x)
    for e, expert in enumerate(moe.experts):
        rows = torch.arange(len(x)) if dense else (indices == e).any(-1).nonzero().squeeze(-1)
        weight = (gates[rows, e] > 0).to(x.dtype) if no_gates else gates[rows, e]
        out.index_add_(0, rows, weight[:, None] * expert(x[rows]))
    return out, loss


def measure():
    _, indices, loss = route(check.routing_logits(), check.TOP_K)
    counts = torch.bincount(indices.flatten(), minlength=check.EXPERTS)
    cap = math.ceil(check.CAPACITY_FACTOR * check.TOKENS * check.TOP_K / check.EXPERTS)
    return float((counts - cap).clamp(min=0).sum()) / indices.numel(), float(loss), int((counts > cap).sum())


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(route, seed=seed)
        check.q2(moe_forward, route, seed=seed)
    check.q1(lambda logits, k: (lambda g, i, p: (g, i, lib.load_balancing_loss(p, i)))(*lib.top_k_gating(logits, k)))
    dropped, loss, over = measure()
    check.q3(dropped, loss, route)
    check.q4(over)
    assert capsys.readouterr().out.count("✓") == 11
    assert 0 < dropped < 0.5 and 0 < over < check.EXPERTS          # the experiment shows something


@pytest.mark.parametrize("kw,message", [
    ({"renormalise": False}, "not renormalised"),
    ({"no_e": True}, "factor E"),
    ({"gates_for_p": True}, "from the gates"),
    ({"per_token": True}, "number of tokens"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda logits, k: route(logits, k, **kw))


def test_q1_argmax_and_shape():
    def argmax_route(logits, k):
        g, i, loss = route(logits, 1)
        return torch.zeros_like(g).scatter(-1, i, 1.0), i, loss
    with pytest.raises(CheckFailure, match="argmax"):
        check.q1(lambda logits, k: argmax_route(logits, k) if k > 1 else route(logits, k))
    with pytest.raises(CheckFailure, match="should return a tuple"):
        check.q1(lambda logits, k: route(logits, k)[0])


def test_q2_names_the_mistake_and_blames_q1():
    with pytest.raises(CheckFailure, match="every expert ran on every token"):
        check.q2(lambda moe, x: moe_forward(moe, x, dense=True), route)
    with pytest.raises(CheckFailure, match="without their gates"):
        check.q2(lambda moe, x: moe_forward(moe, x, no_gates=True), route)
    with pytest.raises(CheckFailure, match="your `route` from q1 is not right yet"):
        check.q2(moe_forward, lambda logits, k: route(logits, k, no_e=True))


def test_q3_q4_compare_with_their_own_run():
    dropped, loss, over = measure()
    with pytest.raises(CheckFailure, match="your `route` from q1 is not right yet"):
        check.q3(dropped, loss, lambda logits, k: route(logits, k, renormalise=False))
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None, None, route)
    with pytest.raises(CheckFailure, match="number of slots"):
        check.q3(dropped * check.TOP_K, loss, route)
    with pytest.raises(CheckFailure, match="balance_loss"):
        check.q3(dropped, loss + 0.1, route)
    with pytest.raises(CheckFailure, match="BELOW capacity"):
        check.q4(check.EXPERTS - over)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None)
