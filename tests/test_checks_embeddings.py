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


def good_nearest(table, vocab, word, k):
    indices, _ = emb.nearest_neighbours(table, vocab.index(word), k)
    return [vocab[i] for i in indices.tolist()]


def good_rope(x, m):
    return emb.apply_rope(x[None], torch.tensor([m]))[0]


def good_embed(ids, token_table, position_table):
    return token_table[ids] + position_table[torch.arange(len(ids))]


SEEDS = (0, 11, 21, 22, 31, 32, 41, 43, 51, 52, 61)


@pytest.mark.parametrize("seed", SEEDS)
def test_correct_answers_pass(seed, capsys):
    check.q1(lambda ids, v: emb.one_hot(ids, v), seed=seed)
    check.q1(lambda ids, v: F.one_hot(ids, v).float(), seed=seed)
    check.q2(good_cosine, seed=seed)
    check.q3(good_nearest, seed=seed)
    check.q3(lambda *args: tuple(good_nearest(*args)), seed=seed)
    check.q4(emb.sinusoidal_positions, seed=seed)            # float32 passes too
    check.q5(good_rope, seed=seed)
    check.q6(good_embed, seed=seed)
    assert capsys.readouterr().out.count("✓") == 8


# --- q1 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("func,message", [
    (lambda ids, v: F.one_hot(ids, v), r"dtype torch.int64: the values are right but integer"),
    (lambda ids, v: F.one_hot(ids).float(), r"ids.max\(\) \+ 1 columns instead of vocab_size"),
    (lambda ids, v: F.one_hot(ids, v).float().T, "transposed: one row per vocabulary word"),
    (lambda ids, v: F.one_hot((ids + 1) % v, v).float(), "values differ"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


# --- q2 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("func,message", [
    (lambda a, b: a @ b.T, r"plain dot product a @ b.T"),
    (lambda a, b: F.normalize(a, dim=-1) @ b.T, "only a's rows were normalised"),
    (lambda a, b: a @ F.normalize(b, dim=-1).T, "only b's rows were normalised"),
    (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, r"wrong axis \(dim 0"),
    (lambda a, b: (a @ b.T) / (a.norm(dim=-1, keepdim=True) ** 2 * b.norm(dim=-1) ** 2), "squared lengths"),
    (lambda a, b: F.normalize(a, dim=-1) @ F.normalize(b, dim=-1), "raised RuntimeError"),   # forgot .T
    (lambda a, b: (F.normalize(a, dim=-1) * F.normalize(b[: len(a)], dim=-1)).sum(-1), r"has shape \(3,\), expected \(3, 4\)"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


# --- q3 ------------------------------------------------------------------------------------------

def nearest_including_self(table, vocab, word, k):
    sims = good_cosine(table[vocab.index(word)][None], table)[0]
    return [vocab[i] for i in sims.topk(k).indices.tolist()]


def nearest_k_minus_one(table, vocab, word, k):
    return nearest_including_self(table, vocab, word, k)[1:]


def nearest_by_dot(table, vocab, word, k):
    i = vocab.index(word)
    sims = table @ table[i]
    sims[i] = -math.inf
    return [vocab[j] for j in sims.topk(k).indices.tolist()]


def nearest_least_similar(table, vocab, word, k):
    i = vocab.index(word)
    sims = good_cosine(table[i][None], table)[0]
    sims[i] = math.inf
    return [vocab[j] for j in sims.topk(k, largest=False).indices.tolist()]


def nearest_indices(table, vocab, word, k):
    return emb.nearest_neighbours(table, vocab.index(word), k)[0]


@pytest.mark.parametrize("func,message", [
    (nearest_including_self, "the word itself is in the list"),
    (nearest_k_minus_one, "only 2 neighbours"),
    (nearest_by_dot, "ranked by the dot product instead of the cosine"),
    (nearest_least_similar, "least similar first"),
    (nearest_indices, "expected a list of words"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q3_mistakes_are_distinct_for_the_hidden_seeds_too():
    for seed in (31, 32):
        for func, message in [(nearest_including_self, "itself"), (nearest_by_dot, "dot product"),
                              (nearest_least_similar, "least similar")]:
            with pytest.raises(CheckFailure, match=message):
                check.q3(func, seed=seed)


# --- q4 ------------------------------------------------------------------------------------------

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
def test_q4_names_the_mistake(func, message):
    if message is None:
        check.q4(func)           # the variant helper itself is right with its defaults
        return
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


# --- q5 ------------------------------------------------------------------------------------------

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
def test_q5_names_the_mistake(func, message):
    if message is None:
        check.q5(func)
        return
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)


# --- q6 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("func,message", [
    (lambda ids, tok, pos: tok[ids] + pos[ids], "indexed the position table with the token ids"),
    (lambda ids, tok, pos: tok[ids], "the position vectors are missing"),
    (lambda ids, tok, pos: pos[: len(ids)], "only the position vectors"),
    (lambda ids, tok, pos: tok[ids] * pos[: len(ids)], "multiplied the two instead of adding"),
    (lambda ids, tok, pos: tok[ids] + pos[-len(ids):], "its last rows"),
    (lambda ids, tok, pos: torch.cat([tok[ids], pos[: len(ids)]], dim=-1), "concatenated instead of added"),
])
def test_q6_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q6(func)


def test_stub_is_reported_with_the_question_and_hint():
    def stub(*args):
        raise NotImplementedError("look up the rows")

    for q in (check.q1, check.q2, check.q3, check.q4, check.q5, check.q6):
        name = q.__name__
        with pytest.raises(CheckFailure, match=rf"^{name}: stub is not implemented yet\.\n  → look up the rows"):
            q(stub)
