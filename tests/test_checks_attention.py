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


def good_attention(q, k, v):
    w = good_scores(q, k).masked_fill(future(q.shape[-2]), NEG).softmax(-1)
    return w @ v, w


def sdpa_attention(q, k, v):  # another correct answer: PyTorch's, weights recomputed
    return F.scaled_dot_product_attention(q, k, v, is_causal=True), good_attention(q, k, v)[1]


def attention_with(scores_of, q, k, v, mask_value=NEG, mask=future, dim=-1):
    """Causal attention with one thing changed: how scores are made, the mask value, the mask, the axis."""
    w = scores_of(q, k).masked_fill(mask(q.shape[-2]), mask_value).softmax(dim)
    return w @ v, w


def pad_of(s, lengths):
    return (torch.arange(s.shape[-1]) >= torch.tensor(lengths).view(-1, 1, 1))  # (batch, 1, t_k)


def good_padded(s, lengths):
    return s.masked_fill(pad_of(s, lengths), NEG).softmax(-1)


def good_entropy(w):
    return -torch.special.xlogy(w, w).sum(-1)


SEEDS = (0, 1, 2, 11, 12, 21)


def experiment(recipe_seed=0, bits=False):
    scaled, unscaled = {}, {}
    for d_k in check.D_KS:
        g = torch.Generator().manual_seed(recipe_seed)
        q, k = torch.randn(64, 16, d_k, generator=g), torch.randn(64, 16, d_k, generator=g)
        for table, s in ((scaled, good_scores(q, k)), (unscaled, q @ k.transpose(-2, -1))):
            table[d_k] = float(good_entropy(s.softmax(-1)).mean()) / (math.log(2) if bits else 1)
    return scaled, unscaled


def test_correct_answers_pass(capsys):
    for seed in SEEDS:
        check.q1(good_attention, seed=seed)
        check.q1(sdpa_attention, seed=seed)
        check.q2(good_padded, seed=seed)
        check.q3(good_entropy, seed=seed)
    check.q1(lambda q, k, v: attention_with(good_scores, q, k, v, mask_value=-1e9))  # a huge negative works too
    check.q3(lambda w: -(w * torch.where(w > 0, w.log(), 0)).sum(-1))
    check.q4(*experiment(), good_entropy)
    check.q4(*experiment(recipe_seed=1), good_entropy)  # another seed is within the tolerance
    check.q5("nearly one-hot")
    out = capsys.readouterr().out
    assert out.count("✓") == 4 * len(SEEDS) + 5
    assert "nothing leaks from the future" in out


def swapped(q, k, v):
    out, w = good_attention(q, k, v)
    return w, out


@pytest.mark.parametrize("func,message", [
    (lambda q, k, v: attention_with(good_scores, q, k, v, mask_value=0.0),
     r"future leaks: position \d attends to position \d with weight 0\.\d\d.*masking with 0 instead of -inf"),
    (lambda q, k, v: attention_with(good_scores, q, k, v, mask=lambda t: torch.ones(t, t, dtype=torch.bool).tril(-1)),
     r"future leaks: .*tril instead of triu"),
    (lambda q, k, v: (lambda w: (w @ v, w))(good_scores(q, k).softmax(-1)), r"future leaks: .*no mask at all"),
    (lambda q, k, v: attention_with(lambda a, b: good_scores(b, a), q, k, v), r"transposed scores \(K Q\^T\)"),
    (lambda q, k, v: attention_with(good_scores, q, k, v, mask=lambda t: future(t).T),
     r"future leaks: position \d attends to position"),
    (lambda q, k, v: attention_with(good_scores, q, k, v, mask=lambda t: torch.ones(t, t, dtype=torch.bool).triu(0)),
     "position 0 are NaN: the mask hides the diagonal"),
    (lambda q, k, v: (lambda w: (w @ v, w))(good_scores(q, k).softmax(-1).masked_fill(future(q.shape[-2]), 0.0)),
     "AFTER the softmax"),
    (lambda q, k, v: attention_with(lambda a, b: a @ b.transpose(-2, -1), q, k, v), r"sqrt\(d_k\) is missing"),
    (lambda q, k, v: attention_with(lambda a, b: a @ b.transpose(-2, -1) / a.shape[-1], q, k, v),
     r"divided by d_k = \d+ instead of sqrt\(d_k\)"),
    (lambda q, k, v: attention_with(lambda a, b: a @ b.transpose(-2, -1) * math.sqrt(a.shape[-1]), q, k, v),
     "multiplied by sqrt"),
    (lambda q, k, v: attention_with(lambda a, b: a @ b.transpose(-2, -1) / math.sqrt(a.shape[-2]), q, k, v),
     "number of positions t"),
    (lambda q, k, v: attention_with(good_scores, q, k, v, dim=-2), r"wrong axis \(dim=-2, the queries\)"),
    (lambda q, k, v: (lambda o, w: (w.transpose(-2, -1) @ v, w))(*good_attention(q, k, v)), "transposed weights"),
    (swapped, r"you returned \(weights, output\)"),
    (lambda q, k, v: good_attention(q, k, v)[0], "expected a pair"),
    (lambda q, k, v: (good_attention(q, k, v)[0], good_attention(q, k, v)[1][..., :-1]), r"has shape"),
    (lambda q, k, v: 1 / 0, "q1: <lambda> raised ZeroDivisionError"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


def test_q1_leak_message_names_the_positions():
    """The message points at the largest leaked weight, with its batch index: check the numbers."""
    q, k, v = check._causal_qkv(0)
    _, leaky = attention_with(good_scores, q, k, v, mask_value=0.0)
    t = q.shape[-2]
    *b, i, j = (int(x) for x in torch.unravel_index(leaky.masked_fill(~future(t), 0).argmax(), leaky.shape))
    expected = f"position {i} attends to position {j} with weight {float(leaky[(*b, i, j)]):.2f} (batch index {tuple(b)})"
    with pytest.raises(CheckFailure) as info:
        check.q1(lambda q, k, v: attention_with(good_scores, q, k, v, mask_value=0.0))
    assert expected in str(info.value)


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
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@pytest.mark.parametrize("func,message", [
    (lambda w: -(w * w.log()).sum(-1), r"entropies are NaN: .*0 \* log\(0\)"),
    (lambda w: -torch.special.xlogy(w, w).sum(-1) / math.log(2), r"bits \(log2\)"),
    (lambda w: torch.special.xlogy(w, w).sum(-1), "minus sign is missing"),
    (lambda w: -torch.special.xlogy(w, w).sum(-2), r"wrong axis \(dim=-2"),
    (lambda w: -torch.special.xlogy(w, w).mean(-1), "mean over the keys"),
    (lambda w: -torch.special.xlogy(w, w).sum(), r"should be a tensor of shape \(2, 4\)|has shape \(\), expected \(2, 4\)"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q4_names_the_mistake():
    scaled, unscaled = experiment()
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None, unscaled, good_entropy)
    with pytest.raises(CheckFailure, match="should be a dict with the keys D_KS"):
        check.q4([1.0], unscaled, good_entropy)
    with pytest.raises(CheckFailure, match="swapped"):
        check.q4(unscaled, scaled, good_entropy)
    with pytest.raises(CheckFailure, match=r"bits \(log2\)"):
        check.q4(*experiment(bits=True), good_entropy)
    with pytest.raises(CheckFailure, match=r"entropy_unscaled\[4\]` = .* own run .* ±0.05"):
        check.q4(scaled, {d: h + 0.2 for d, h in unscaled.items()}, good_entropy)
    with pytest.raises(CheckFailure, match="(?s)^q4: this fails because your `attention_entropy` from q3.*bits"):
        check.q4(scaled, unscaled, lambda w: good_entropy(w) / math.log(2))


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"), ("nearly uniform", "entropy ln 16"),
                                            ("the same as with scaling", "compare your two dicts"),
                                            ("one-hot", "should be one of")])
def test_q5_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(answer)
