"""The unit 03 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import embeddings as emb
from llmcourse.checks import CheckFailure
from llmcourse.checks import embeddings as check


# --- correct answers -----------------------------------------------------------------------------

def good_cosine(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def good_rope(x, m):
    return emb.apply_rope(x[None], torch.tensor([m]))[0]


SEEDS = (0, 11, 21, 22, 31, 32, 41, 43, 51, 52, 61)


@pytest.mark.parametrize("seed", SEEDS)
def test_correct_answers_pass(seed, capsys):
    check.q1(good_cosine, seed=seed)
    check.q2(emb.sinusoidal_positions, seed=seed)            # float32 passes too
    check.q3(good_rope, seed=seed)
    assert capsys.readouterr().out.count("✓") == 3


# --- q1 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("func,message", [
    (lambda a, b: a @ b.T, r"plain dot product a @ b.T"),
    (lambda a, b: F.normalize(a, dim=-1) @ b.T, "only a's rows were normalised"),
    (lambda a, b: a @ F.normalize(b, dim=-1).T, "only b's rows were normalised"),
    (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, r"wrong axis \(dim 0"),
    (lambda a, b: (a @ b.T) / (a.norm(dim=-1, keepdim=True) ** 2 * b.norm(dim=-1) ** 2), "squared lengths"),
    (lambda a, b: F.normalize(a, dim=-1) @ F.normalize(b, dim=-1), "raised RuntimeError"),   # forgot .T
    (lambda a, b: (F.normalize(a, dim=-1) * F.normalize(b[: len(a)], dim=-1)).sum(-1), r"has shape \(3,\), expected \(3, 4\)"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


# --- q2 ------------------------------------------------------------------------------------------

def sinusoidal_variant(*, swap=False, exponent=2.0, halves=False, first=0, multiply=False):
    def sinusoidal(n, d):
        pos = torch.arange(first, first + n, dtype=torch.float64)[:, None]
        scale = 10000 ** (exponent * torch.arange(d // 2, dtype=torch.float64) / d)
        angles = pos * scale if multiply else pos / scale
        s, c = (angles.cos(), angles.sin()) if swap else (angles.sin(), angles.cos())
        if halves:
            return torch.cat([s, c], dim=-1)
        return torch.stack([s, c], dim=-1).reshape(n, d)
    return sinusoidal


@pytest.mark.parametrize("func,message", [
    (sinusoidal_variant(), None),
    (sinusoidal_variant(swap=True), "sine and cosine swapped"),
    (sinusoidal_variant(exponent=1.0), r"wrong frequency exponent: 10000\^\(i/d\)"),
    (sinusoidal_variant(exponent=4.0), r"wrong frequency exponent: 10000\^\(2k/d\)"),
    (sinusoidal_variant(multiply=True), "multiplied the position"),
    (sinusoidal_variant(halves=True), "sines in the first half"),
    (sinusoidal_variant(first=1), "positions start at 1"),
])
def test_q2_names_the_mistake(func, message):
    if message is None:
        check.q2(func)           # the variant helper itself is right with its defaults
        return
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


# --- q3 ------------------------------------------------------------------------------------------

def rope_variant(*, halves=False, sign=1.0, exponent=2.0, shift=0):
    def rope_rotate(x, m):
        d = x.shape[-1]
        angle = sign * (m + shift) * 10000 ** (-exponent * torch.arange(d // 2, dtype=torch.float64) / d)
        if halves:
            a, b = x[: d // 2].double(), x[d // 2:].double()
        else:
            a, b = x[0::2].double(), x[1::2].double()
        ra, rb = a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()
        if halves:
            return torch.cat([ra, rb])
        return torch.stack([ra, rb], dim=-1).reshape(d)
    return rope_rotate


@pytest.mark.parametrize("func,message", [
    (rope_variant(), None),
    (rope_variant(halves=True), "rotated the wrong pairs: dimension j with j \\+ d/2"),
    (rope_variant(sign=-1.0), "rotated the wrong way"),
    (rope_variant(exponent=1.0), r"wrong frequency exponent: θ_j = 10000\^\(-j/d\)"),
    (rope_variant(shift=1), r"rotated by \(m \+ 1\)·θ"),
    (lambda x, m: x, "returned x unchanged"),
    (lambda x, m: x[0::2], r"has shape \(4,\), expected \(8,\)"),
])
def test_q3_names_the_mistake(func, message):
    if message is None:
        check.q3(func)
        return
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


# --- q4 and q5: the trained table ---------------------------------------------------------------

def test_q4_and_q5_pass_the_measured_shares_and_the_right_reading(capsys):
    table, random_table, vocab = check.experiment_tables()

    def share(t):
        sims = good_cosine(t, t).fill_diagonal_(-math.inf)
        digits = [vocab.index(d) for d in "0123456789"]
        return sum(vocab[j] in "0123456789" for i in digits for j in sims[i].topk(5).indices.tolist()) / 50

    check.q4(share(table), share(random_table), good_cosine)
    check.q5("characters used alike get similar vectors")
    assert capsys.readouterr().out.count("✓") == 2


def test_q4_names_the_mistake():
    table, random_table, vocab = check.experiment_tables()
    trained, random_ = check.digit_share(table, vocab), check.digit_share(random_table, vocab)
    cases = [
        ((None, random_), "not answered yet"),
        ((check.digit_share(table, vocab, include_self=True), random_), "its own neighbour"),
        ((trained * 50, random_), "a count of neighbours"),
        ((random_, trained), "the share of the other table"),
        ((trained, random_ + 0.02), r"own run .*±1e-09"),
    ]
    for answers, message in cases:
        with pytest.raises(CheckFailure, match=message):
            check.q4(*answers, good_cosine)
    with pytest.raises(CheckFailure, match="^q4: this fails because your `cosine_similarity` from q1"):
        check.q4(trained, random_, lambda a, b: a @ b.T)


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"),
                                            ("neighbours follow the order of the character codes", "32 codes away"),
                                            ("the table is still random", "a random table gives"),
                                            ("similar", "should be one of")])
def test_q5_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(answer)
