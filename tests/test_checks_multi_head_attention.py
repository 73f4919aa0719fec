"""The unit 05 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch
from einops import rearrange

from llmcourse.attention import attention
from llmcourse.checks import CheckFailure
from llmcourse.checks import multi_head_attention as check


def mha(x, w_qkv, b_qkv, w_o, b_o, n_heads, *, split_pattern="b t (h d) -> b h t d",
        merge_pattern="b h t d -> b t (h d)", out=lambda c, w: c @ w.T, project=True, scale=None, causal=True):
    q, k, v = (rearrange(p, split_pattern, h=n_heads) for p in (x @ w_qkv.T + b_qkv).chunk(3, -1))
    if scale is not None:
        q = q * math.sqrt(q.shape[-1]) / math.sqrt(scale(x))
    heads, _ = attention(q, k, v, causal=causal)
    concat = rearrange(heads, merge_pattern)
    return out(concat, w_o) + b_o if project else concat


def previous(weights):
    return torch.diagonal(weights, -1, dim1=-2, dim2=-1).mean((0, 2))


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 5, 11, 12):
        check.q1(mha, seed=seed)
        check.q2(previous, seed=seed)
    baseline, increases = check.ablation_increases()
    best = max(increases, key=increases.get)
    check.q3(best, increases[best])
    check.q3(list(best), increases[best] + 5e-4)      # a list, and a value within the tolerance
    check.q4(check.ABLATION_READINGS[0])
    assert capsys.readouterr().out.count("✓") == 2 * 5 + 3


def test_q1_crash_is_reported_with_the_question():
    with pytest.raises(CheckFailure, match=r"q1: <lambda> raised RuntimeError"):
        check.q1(lambda x, w_qkv, *rest: x @ w_qkv)


@pytest.mark.parametrize("kwargs,message", [
    (dict(project=False), "output projection is missing"),
    (dict(out=lambda c, w: c @ w), "transposed output projection"),
    (dict(split_pattern="b t (d h) -> b h t d", merge_pattern="b h t d -> b t (d h)"), r"split in the wrong order.*concatenated back"),
    (dict(split_pattern="b t (d h) -> b h t d"), r"split in the wrong order, 'b t \(d h\)' instead of 'b t \(h d\)'\.\n"),
    (dict(merge_pattern="b h t d -> b t (d h)"), r"concatenated in the wrong order"),
    (dict(scale=lambda x: x.shape[-1]), r"sqrt\(d_model\)"),
    (dict(causal=False), "no causal mask"),
])
def test_q1_names_the_mistake(kwargs, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *args: mha(*args, **kwargs))
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *args: mha(*args, **kwargs), seed=11)


@pytest.mark.parametrize("func,message", [
    (lambda w: torch.diagonal(w, 0, dim1=-2, dim2=-1).mean((0, 2)), "ITSELF"),
    (lambda w: torch.diagonal(w, 1, dim1=-2, dim2=-1).mean((0, 2)), r"offset \+1"),
    (lambda w: torch.diagonal(w, -1, dim1=-2, dim2=-1).sum(-1).mean(0) / w.shape[-1], "divided by t instead of t - 1"),
    (lambda w: torch.diagonal(w, -1, dim1=-2, dim2=-1).mean((1, 2)), r"the shape is \(batch,\)"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


def test_q3_names_the_mistake():
    baseline, increases = check.ablation_increases()
    best, least = max(increases, key=increases.get), min(increases, key=increases.get)
    second = sorted(increases, key=increases.get)[-2]
    cases = [
        ((None, 0.1), "not answered yet"),
        ((least, increases[least]), "LEAST"),
        ((second, increases[second]), "another head's removal raises it more"),
        (((9, 9), 0.1), r"should be a pair \(layer, head\)"),
        ((best, baseline + increases[best]), "the loss without the head, not its increase"),
        ((best, increases[best] / math.log(2)), "in bits"),
        ((best, increases[best] + 0.01), r"own run .*±0.001"),
    ]
    for answers, message in cases:
        with pytest.raises(CheckFailure, match=message):
            check.q3(*answers)


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"),
                                            (check.ABLATION_READINGS[1], "far from equal"),
                                            (check.ABLATION_READINGS[2], "the three largest increases"),
                                            ("first layer", "should be one of")])
def test_q4_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(answer)
