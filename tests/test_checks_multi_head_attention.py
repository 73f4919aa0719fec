"""The unit 05 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch
from einops import rearrange

from llmcourse.attention import attention
from llmcourse.checks import CheckFailure
from llmcourse.checks import multi_head_attention as check


def split(x, n_heads):
    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)


def merge(heads):
    return rearrange(heads, "b h t d -> b t (h d)")


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


def count(d, h, bias):
    return 4 * d * d + 4 * d * bias


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 5, 11, 12):
        check.q1(split, seed=seed)
        check.q2(merge, seed=seed)
        check.q3(lambda x, w, b: torch.nn.functional.linear(x, w, b), seed=seed)
        check.q4(mha, seed=seed)
        check.q5(count, seed=seed)
        check.q6(previous, seed=seed)
    # torch.cat of the heads along channels is also correct
    check.q2(lambda hs: torch.cat(hs.unbind(1), dim=-1))
    assert capsys.readouterr().out.count("✓") == 31


@pytest.mark.parametrize("func,message", [
    (lambda x, h: rearrange(x, "b t (d h) -> b h t d", h=h), r"wrong order, 'b t \(d h\)' instead of 'b t \(h d\)'"),
    (lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), "without moving the time axis"),
    (lambda x, h: rearrange(x, "b t (h d) -> b t h d", h=h), r"\(batch, time, heads, d_head\) = \(2, 4, 2, 2\)"),
    (lambda x, h: x[:, None], r"shape \(2, 1, 4, 4\), expected \(2, 2, 4, 2\)"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("func,message", [
    (lambda hs: rearrange(hs, "b h t d -> b t (d h)"), r"wrong order, 'b t \(d h\)'"),
    (lambda hs: hs.reshape(hs.shape[0], hs.shape[2], -1), "without moving the head axis"),
    (lambda hs: torch.cat(hs.unbind(1), dim=1), "concatenated along the time axis"),
    (lambda hs: torch.cat(hs.unbind(1), dim=1).reshape(hs.shape[0], hs.shape[2], -1), "along the wrong axis"),
    (lambda hs: hs.transpose(1, 2), "not concatenated yet"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@pytest.mark.parametrize("func,message", [
    (lambda x, w, b: x @ w + b, r"transposed projection, x @ W instead of x @ W.T"),
    (lambda x, w, b: x @ w.T, "bias is missing"),
    (lambda x, w, b: x @ w, "transposed projection and no bias"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q3_square_only_solution_fails_on_a_wide_matrix():
    with pytest.raises(CheckFailure, match="raised RuntimeError"):
        check.q3(lambda x, w, b: (x @ w.T + b)[..., :x.shape[-1]] if w.shape[0] == w.shape[1] else x @ w + b)


@pytest.mark.parametrize("kwargs,message", [
    (dict(project=False), "output projection is missing"),
    (dict(out=lambda c, w: c @ w), "transposed output projection"),
    (dict(split_pattern="b t (d h) -> b h t d", merge_pattern="b h t d -> b t (d h)"), r"split in the wrong order.*concatenated back"),
    (dict(split_pattern="b t (d h) -> b h t d"), r"split in the wrong order, 'b t \(d h\)' instead of 'b t \(h d\)'\.\n"),
    (dict(merge_pattern="b h t d -> b t (d h)"), r"concatenated in the wrong order"),
    (dict(scale=lambda x: x.shape[-1]), r"sqrt\(d_model\)"),
    (dict(causal=False), "no causal mask"),
])
def test_q4_names_the_mistake(kwargs, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(lambda *args: mha(*args, **kwargs))
    with pytest.raises(CheckFailure, match=message):
        check.q4(lambda *args: mha(*args, **kwargs), seed=11)


@pytest.mark.parametrize("func,message", [
    (lambda d, h, bias: h * 3 * (d * d + d * bias) + d * d + d * bias, "its own full"),
    (lambda d, h, bias: 4 * d * d, "biases are missing"),
    (lambda d, h, bias: 3 * d * d + 3 * d * bias, "output projection .* is missing"),
    (lambda d, h, bias: 4 * d * d // h + 4 * d * bias, r"\(d_head x d_head\)"),
    (lambda d, h, bias: 4 * d * d + 4 * d, "biases counted although bias=False"),
])
def test_q5_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)


@pytest.mark.parametrize("func,message", [
    (lambda w: torch.diagonal(w, 0, dim1=-2, dim2=-1).mean((0, 2)), "ITSELF"),
    (lambda w: torch.diagonal(w, 1, dim1=-2, dim2=-1).mean((0, 2)), r"offset \+1"),
    (lambda w: torch.diagonal(w, -1, dim1=-2, dim2=-1).sum(-1).mean(0) / w.shape[-1], "divided by t instead of t - 1"),
    (lambda w: torch.diagonal(w, -1, dim1=-2, dim2=-1).mean((1, 2)), r"the shape is \(batch,\)"),
])
def test_q6_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q6(func)


def test_stubs_and_crashes_are_reported_with_the_question():
    def stub(*args):
        raise NotImplementedError("use rearrange")

    for q in (check.q1, check.q2, check.q3, check.q4, check.q5, check.q6):
        name = q.__name__
        with pytest.raises(CheckFailure, match=rf"^{name}: stub is not implemented yet"):
            q(stub)
    with pytest.raises(CheckFailure, match=r"q4: <lambda> raised RuntimeError"):
        check.q4(lambda x, w_qkv, *rest: x @ w_qkv)
