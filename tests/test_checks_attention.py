"""The unit 04 checks: they pass correct answers and name each classic mistake specifically."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import attention as check

NEG = float("-inf")


def future(t):
    return torch.ones(t, t, dtype=torch.bool).triu(1)


def good_scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def good_causal(s):
    return s.masked_fill(future(s.shape[-1]), NEG).softmax(-1)


def good_attention(q, k, v, causal=False):
    s = good_scores(q, k)
    if causal:
        s = s.masked_fill(future(s.shape[-1]), NEG)
    w = s.softmax(-1)
    return w @ v, w


def sdpa_attention(q, k, v, causal=False):  # another correct answer: PyTorch's, weights recomputed
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal), good_attention(q, k, v, causal)[1]


def pad_of(s, lengths):
    return (torch.arange(s.shape[-1]) >= torch.tensor(lengths).view(-1, 1, 1))  # (batch, 1, t_k)


def good_padded(s, lengths):
    return s.masked_fill(pad_of(s, lengths), NEG).softmax(-1)


def good_entropy(w):
    return -torch.special.xlogy(w, w).sum(-1)


SEEDS = (0, 1, 2, 11, 12, 21)


def test_correct_answers_pass(capsys):
    for seed in SEEDS:
        check.q1(good_scores, seed=seed)
        check.q2(lambda s: s.softmax(-1), seed=seed)
        check.q3(good_causal, seed=seed)
        check.q4(good_attention, seed=seed)
        check.q4(sdpa_attention, seed=seed)
        check.q5(good_padded, seed=seed)
        check.q6(good_entropy, seed=seed)
    check.q2(lambda s: (s - s.amax(-1, keepdim=True)).exp() / (s - s.amax(-1, keepdim=True)).exp().sum(-1, keepdim=True))
    check.q3(lambda s: s.masked_fill(future(s.shape[-1]), -1e9).softmax(-1))  # a huge negative number works too
    check.q6(lambda w: -(w * torch.where(w > 0, w.log(), 0)).sum(-1))
    out = capsys.readouterr().out
    assert out.count("✓") == 7 * len(SEEDS) + 3
    assert "✓ q3 passed: no position sees its future" in out


@pytest.mark.parametrize("func,message", [
    (lambda q, k: q @ k.transpose(-2, -1), r"sqrt\(d_k\) is missing"),
    (lambda q, k: q @ k.transpose(-2, -1) / q.shape[-1], r"divided by d_k = 4 instead of sqrt\(d_k\)"),
    (lambda q, k: q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1]), "multiplied by sqrt"),
    (lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2]), "number of keys t_k"),
    (lambda q, k: k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1]), r"transposed: you computed K Q\^T"),
    (lambda q, k: q @ k, r"q1: <lambda> raised RuntimeError"),
    (lambda q, k: (q @ k.transpose(-2, -1)).sum(-1), r"has shape \(2, 1, 3\), expected \(2, 1, 3, 5\)"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("func,message", [
    (lambda s: s.softmax(-2), r"wrong axis \(dim=-2, the queries\)"),
    (lambda s: s.softmax(0), r"wrong axis \(dim=0, the batch\)"),
    (lambda s: s.exp() / s.exp().sum(), "whole tensor"),
    (lambda s: s / s.sum(-1, keepdim=True), "without exponentiating"),
    (lambda s: torch.sigmoid(s), "sigmoid"),
    (lambda s: s.exp() / s.exp().sum(-1, keepdim=True), "(?s)scores in the thousands.*NaN.*subtract each row's maximum"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@pytest.mark.parametrize("func,message", [
    (lambda s: s.masked_fill(future(s.shape[-1]), 0.0).softmax(-1),
     r"future leaks: position \d attends to position \d with weight 0\.\d\d.*masking with 0 instead of -inf"),
    (lambda s: s.masked_fill(torch.ones(s.shape[-1], s.shape[-1], dtype=torch.bool).tril(-1), NEG).softmax(-1),
     r"future leaks: .*tril instead of triu"),
    (lambda s: s.softmax(-1), r"future leaks: .*no mask at all"),
    (lambda s: s.masked_fill(future(s.shape[-1]), NEG).softmax(-2), r"wrong axis \(dim=-2, the queries\)"),
    (lambda s: s.masked_fill(future(s.shape[-1]).T, NEG).softmax(-1), r"future leaks: position \d attends to position"),
    (lambda s: s.masked_fill(torch.ones(s.shape[-1], s.shape[-1], dtype=torch.bool).triu(0), NEG).softmax(-1),
     "position 0 are NaN: the mask hides the diagonal"),
    (lambda s: s.softmax(-1).masked_fill(future(s.shape[-1]), 0.0), r"sum to 0\.\d+, not 1.*AFTER the softmax"),
    (lambda s: s.masked_fill(future(s.shape[-1]), NEG).softmax(-1)[..., :-1], r"has shape \(2, 4, 3\), expected \(2, 4, 4\)"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q3_leak_message_names_the_positions():
    """The message points at the largest leaked weight, with its batch index: check the numbers."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 4, 4, generator=g, dtype=torch.float64) * 2
    leaky = s.masked_fill(future(4), 0.0).softmax(-1)
    b, i, j = (int(x) for x in torch.unravel_index(leaky.masked_fill(~future(4), 0).argmax(), leaky.shape))
    expected = f"position {i} attends to position {j} with weight {float(leaky[b, i, j]):.2f} (batch index ({b},))"
    with pytest.raises(CheckFailure) as info:
        check.q3(lambda s: s.masked_fill(future(s.shape[-1]), 0.0).softmax(-1))
    assert expected in str(info.value)


def swapped(q, k, v, causal=False):
    out, w = good_attention(q, k, v, causal)
    return w, out


@pytest.mark.parametrize("func,message", [
    (lambda q, k, v, causal=False: good_attention(q, k, v, False), r"future leaks: .*causal argument being ignored"),
    (lambda q, k, v, causal=False: (lambda s: (s.softmax(-1) @ v, s.softmax(-1)))(
        good_scores(q, k).masked_fill(future(q.shape[-2]), 0.0) if causal else good_scores(q, k)),
     r"future leaks: .*masking with 0 instead of -inf"),
    (lambda q, k, v, causal=False: good_attention(q * math.sqrt(q.shape[-1]), k, v, causal),
     r"weight matrix \(causal=False\) .*sqrt\(d_k\) is missing"),
    (lambda q, k, v, causal=False: (lambda w: (w @ v if w.shape[-2] == w.shape[-1] else torch.zeros(1), w))(
        good_scores(q, k).softmax(-2)), r"wrong axis \(dim=-2"),
    (lambda q, k, v, causal=False: (lambda o, w: (w.transpose(-2, -1) @ v if causal else o, w))(
        *good_attention(q, k, v, causal)), r"output \(causal=True\) .*transposed weights"),
    (swapped, r"you returned \(weights, output\)"),
    (lambda q, k, v, causal=False: good_attention(q, k, v, causal)[0], "expected a pair"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


@pytest.mark.parametrize("func,message", [
    (lambda s, n: s.masked_fill(pad_of(s, n), 0.0).softmax(-1),
     r"text 0 has 3 real tokens, but query \d gives the pad at position [34] weight 0\.\d\d.*0 instead of -inf"),
    (lambda s, n: s.masked_fill(torch.arange(s.shape[-1]) > torch.tensor(n).view(-1, 1, 1), NEG).softmax(-1),
     r"gives the pad at position 3 .*off-by-one"),
    (lambda s, n: s.masked_fill(~pad_of(s, n), NEG).softmax(-1), "mask inverted"),
    (lambda s, n: s.masked_fill(pad_of(s, n).transpose(-2, -1), NEG).softmax(-1), "padded QUERIES"),
    (lambda s, n: s.softmax(-1), r"pads must get weight exactly 0"),
    (lambda s, n: s.softmax(-1).masked_fill(pad_of(s, n), 0.0), r"query 0 \(batch index \(0,\)\) sum to 0\.\d+, not 1"),
])
def test_q5_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)


@pytest.mark.parametrize("func,message", [
    (lambda w: -(w * w.log()).sum(-1), r"entropies are NaN: .*0 \* log\(0\)"),
    (lambda w: -torch.special.xlogy(w, w).sum(-1) / math.log(2), r"bits \(log2\)"),
    (lambda w: torch.special.xlogy(w, w).sum(-1), "minus sign is missing"),
    (lambda w: -torch.special.xlogy(w, w).sum(-2), r"wrong axis \(dim=-2"),
    (lambda w: -torch.special.xlogy(w, w).mean(-1), "mean over the keys"),
    (lambda w: -torch.special.xlogy(w, w).sum(), r"should be a tensor of shape \(2, 4\)|has shape \(\), expected \(2, 4\)"),
])
def test_q6_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q6(func)


def test_stub_and_crash_are_reported_with_the_question():
    def stub(*args, **kwargs):
        raise NotImplementedError("use q @ k.transpose(-2, -1)")

    for n, question in enumerate([check.q1, check.q2, check.q3, check.q4, check.q5, check.q6], start=1):
        with pytest.raises(CheckFailure, match=rf"^q{n}: stub is not implemented yet"):
            question(stub)
    with pytest.raises(CheckFailure, match="q4: <lambda> raised ZeroDivisionError"):
        check.q4(lambda q, k, v, causal=False: 1 / 0)
