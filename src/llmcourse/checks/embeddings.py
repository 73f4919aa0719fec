"""Checks for exercises/03_embeddings.ipynb: lookup, similarity, neighbours, positions.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds), compares with a trusted reference (PyTorch, or the formula of the paper written
independently of the course library), and names the classic mistakes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmcourse.checks.core import call, compare, fail, passed

# Tolerances for the position questions: a correct float32 answer differs from the float64
# reference by about 1e-6 times the angle.
POS_TOL = {"rtol": 1e-4, "atol": 1e-4}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- q1: one-hot ------------------------------------------------------------------------------

def q1(one_hot, seed: int = 0) -> None:
    """one_hot(ids, vocab_size) -> (t, vocab_size) float; one_hot(ids) @ table == table[ids]."""
    g = _generator(seed)
    vocab_size, t, d = 7 + seed % 4, 6 + seed % 3, 3
    ids = torch.randint(0, vocab_size - 2, (t,), generator=g)  # the last ids unused: catches max(ids)+1
    ids[0] = 0
    got = call("q1", one_hot, ids.clone(), vocab_size)
    expected = F.one_hot(ids, vocab_size).float()  # (t, vocab)
    if isinstance(got, torch.Tensor) and got.shape == (t, int(ids.max()) + 1) and int(ids.max()) + 1 != vocab_size:
        fail("q1", f"one_hot has shape {tuple(got.shape)}, expected {tuple(expected.shape)}: it has ids.max() + 1 "
                   f"columns instead of vocab_size = {vocab_size}.",
             "a one-hot vector has one place per word of the vocabulary, used in this text or not")
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and not got.is_floating_point():
        fail("q1", f"one_hot has dtype {got.dtype}: the values are right but integer, so `one_hot @ table` "
                   "with a float table raises an error.",
             "convert with .float() (torch.nn.functional.one_hot returns int64)")
    compare("q1", got, expected, name="one_hot(ids, vocab_size)", mistakes=[
        ("transposed: one row per vocabulary word instead of one row per token; the shape should be "
         "(tokens, vocab_size)", expected.T),
    ], hint="row k has a single 1, in column ids[k]")
    table = torch.randn(vocab_size, d, generator=g)
    if not torch.allclose(got.float() @ table, table[ids]):
        fail("q1", "one_hot(ids) @ table is not table[ids]", "each row must have exactly one 1")
    passed("q1", f"one_hot(ids) @ table equals table[ids] (shape {(t, d)}): multiplying by a one-hot vector is a row lookup")


# --- q2: cosine similarity --------------------------------------------------------------------

def _rows_with_varied_lengths(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x * torch.empty(n, 1, dtype=torch.float64).uniform_(0.2, 5.0, generator=g)  # lengths from 0.2 to 5


def q2(cosine_similarity, seed: int = 0) -> None:
    """cosine_similarity(a (n, d), b (m, d)) -> (n, m): every row of a against every row of b."""
    g = _generator(seed)
    n, m, d = 3 + seed % 3, 4 + seed % 2, 5
    a, b = _rows_with_varied_lengths(g, n, d), _rows_with_varied_lengths(g, m, d)
    got = call("q2", cosine_similarity, a.clone(), b.clone())
    expected = F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)  # (n, m)
    a_len, b_len = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    compare("q2", got, expected, name="cosine_similarity(a, b)", mistakes=[
        ("the plain dot product a @ b.T: divide by both lengths, |a| and |b|", a @ b.T),
        ("only a's rows were normalised; b's rows must have length 1 too", (a / a_len) @ b.T),
        ("only b's rows were normalised; a's rows must have length 1 too", a @ (b / b_len).T),
        ("normalised along the wrong axis (dim 0, down the columns); each row is one vector, so use "
         "norm(dim=-1, keepdim=True)", (a / a.norm(dim=0, keepdim=True)) @ (b / b.norm(dim=0, keepdim=True)).T),
        ("divided by the squared lengths |a|² |b|²; divide by the lengths themselves", (a @ b.T) / (a_len**2 * b_len.T**2)),
    ], hint="cos(a, b) = a·b / (|a| |b|): normalise every row of a and of b to length 1, then a @ b.T")
    passed("q2", f"matches torch.nn.functional.cosine_similarity for all {n}×{m} pairs")


# --- q3: nearest neighbours -------------------------------------------------------------------

def q3(nearest, seed: int = 0) -> None:
    """nearest(table, vocab, word, k) -> the k most similar words (cosine), the word itself excluded."""
    g = _generator(seed)
    vocab = ["apple", "banana", "cherry", "dog", "cat", "mouse", "car", "bus", "train", "tree", "river", "stone"]
    table = _rows_with_varied_lengths(g, len(vocab), 4)   # (vocab, d): lengths vary, so dot != cosine ranking
    word, k = vocab[seed % len(vocab)], 3 + seed % 2
    got = call("q3", nearest, table.clone(), list(vocab), word, k)
    i = vocab.index(word)
    cos = F.cosine_similarity(table[i][None], table, dim=-1)  # (vocab,)

    def ranked(scores, descending=True, exclude=True):
        order = [j for j in scores.argsort(descending=descending).tolist() if not (exclude and j == i)]
        return [vocab[j] for j in order]

    expected = ranked(cos)[:k]
    if isinstance(got, tuple):
        got = list(got)
    if isinstance(got, torch.Tensor) or (isinstance(got, list) and got and not isinstance(got[0], str)):
        fail("q3", f"expected a list of words (strings), got {got!r:.80}",
             "turn the indices into words: [vocab[i] for i in indices]")
    compare("q3", got, expected, name=f"the {k} nearest neighbours of {word!r}", mistakes=[
        (f"the word itself is in the list: {word!r} is always its own nearest neighbour (similarity 1); "
         "leave it out", ranked(cos, exclude=False)[:k]),
        (f"only {k - 1} neighbours: after dropping the word itself, take k more", ranked(cos)[:k - 1]),
        ("ranked by the dot product instead of the cosine: long vectors win whatever their direction",
         ranked(table @ table[i])[:k]),
        ("least similar first: sort the similarities in descending order (largest first)",
         ranked(cos, descending=False)[:k]),
    ], hint="cosine similarity of the word's row with every row, set the word's own entry to -inf, take the top k")
    passed("q3", f"the {k} nearest neighbours of {word!r} are {expected}")


# --- q4: sinusoidal position encoding ---------------------------------------------------------

def _sinusoidal(n: int, d: int, *, first_pos: int = 0, exponent_scale: float = 2.0, swap: bool = False,
                halves: bool = False, multiply: bool = False) -> torch.Tensor:
    """The paper's formula, written element by element (float64), with switches for the classic mistakes."""
    pe = torch.zeros(n, d, dtype=torch.float64)
    for pos in range(first_pos, first_pos + n):
        for i in range(d // 2):
            scale = 10000 ** (exponent_scale * i / d)
            angle = pos * scale if multiply else pos / scale
            s, c = (math.cos(angle), math.sin(angle)) if swap else (math.sin(angle), math.cos(angle))
            even, odd = (i, d // 2 + i) if halves else (2 * i, 2 * i + 1)
            pe[pos - first_pos, even], pe[pos - first_pos, odd] = s, c
    return pe


def q4(sinusoidal, seed: int = 0) -> None:
    """sinusoidal(n_positions, d_model) -> (n_positions, d_model), PE(pos, 2i) = sin(pos / 10000^(2i/d))."""
    n, d = 12 + seed % 7, 8 + 2 * (seed % 3)
    got = call("q4", sinusoidal, n, d)
    compare("q4", got, _sinusoidal(n, d), name=f"sinusoidal({n}, {d})", **POS_TOL, mistakes=[
        ("sine and cosine swapped: even dimensions (2i) get the sine, odd ones (2i+1) the cosine",
         _sinusoidal(n, d, swap=True)),
        ("wrong frequency exponent: 10000^(i/d) with i the pair index; the paper's exponent is 2i/d",
         _sinusoidal(n, d, exponent_scale=1.0)),
        ("wrong frequency exponent: 10000^(2k/d) with k running over every dimension (0, 2, 4, ...), i.e. 4i/d; "
         "use the pair index i, or the even dimension 2i itself, not twice it",
         _sinusoidal(n, d, exponent_scale=4.0)),
        ("multiplied the position by 10000^(2i/d) instead of dividing by it", _sinusoidal(n, d, multiply=True)),
        ("sines in the first half and cosines in the second half; the paper interleaves them: "
         "column 2i is the sine, column 2i+1 the cosine", _sinusoidal(n, d, halves=True)),
        ("positions start at 1; the first position is 0 (its row is 0, 1, 0, 1, ...)", _sinusoidal(n, d, first_pos=1)),
    ], hint="PE[pos, 2i] = sin(pos / 10000**(2i/d)), PE[pos, 2i+1] = cos(pos / 10000**(2i/d)), pos = 0 .. n-1")
    passed("q4", f"matches the formula of 'Attention is all you need' for {n} positions × {d} dimensions")


# --- q5: RoPE ---------------------------------------------------------------------------------

def _rope_reference(x: torch.Tensor, m: float, base: float = 10000.0, *, halves: bool = False,
                    exponent_scale: float = 2.0) -> torch.Tensor:
    """Complex-number form: pair j as x_2j + i x_2j+1, times e^{i m theta_j}, theta_j = base^(-2j/d)."""
    d = x.shape[-1]
    theta = base ** (-exponent_scale * torch.arange(d // 2, dtype=torch.float64) / d)  # (d/2,)
    x = x.double()
    if halves:  # pair j with j + d/2 (the "rotate half" layout)
        z = torch.complex(x[: d // 2], x[d // 2:])
    else:
        z = torch.view_as_complex(x.reshape(d // 2, 2).contiguous())
    z = z * torch.polar(torch.ones_like(theta), m * theta)
    if halves:
        return torch.cat([z.real, z.imag])
    return torch.view_as_real(z).reshape(d)


def q5(rope_rotate, seed: int = 0) -> None:
    """rope_rotate(x (d,), m) -> (d,): pair (x_2j, x_2j+1) turned by the angle m * 10000^(-2j/d)."""
    g = _generator(seed)
    d, m = 8 + 2 * (seed % 3), 3 + seed % 5
    x = torch.randn(d, generator=g)
    got = call("q5", rope_rotate, x.clone(), m)
    compare("q5", got, _rope_reference(x, m), name=f"rope_rotate(x, m={m})", **POS_TOL, mistakes=[
        ("rotated the wrong pairs: dimension j with j + d/2 (the 'rotate half' layout); here pair j is "
         "(x[2j], x[2j+1]), neighbours", _rope_reference(x, m, halves=True)),
        ("rotated the wrong way (angle -m·θ): x'_2j = x_2j cos - x_2j+1 sin, x'_2j+1 = x_2j sin + x_2j+1 cos",
         _rope_reference(x, -m)),
        ("wrong frequency exponent: θ_j = 10000^(-j/d); it is 10000^(-2j/d)", _rope_reference(x, m, exponent_scale=1.0)),
        ("rotated by (m + 1)·θ: positions count from 0", _rope_reference(x, m + 1)),
        ("returned x unchanged; every pair must be turned by its angle m·θ_j", x.double()),
    ], hint="for j in range(d // 2): angle = m * 10000 ** (-2 * j / d); rotate (x[2j], x[2j+1]) by angle")
    at_zero = call("q5", rope_rotate, x.clone(), 0)
    compare("q5", at_zero, x.double(), name="rope_rotate(x, 0)", **POS_TOL,
            hint="at position 0 every angle is 0: the vector must come back unchanged")
    passed("q5", f"matches the complex form x_j · e^(i m θ_j) for d = {d}, m = {m}; lengths are kept")


# --- q6: token + position embeddings ----------------------------------------------------------

def q6(embed_with_positions, seed: int = 0) -> None:
    """embed_with_positions(ids (t,), token_table (V, d), position_table (T, d)) -> (t, d)."""
    g = _generator(seed)
    vocab_size, context, d = 8, 10, 4  # vocab <= context: position_table[ids] runs, so that mistake shows
    t = 5 + seed % 3
    ids = torch.randint(0, vocab_size, (t,), generator=g)
    ids[:2] = torch.tensor([7, 3])  # ids that differ from positions 0, 1, so the mix-up shows
    token_table = torch.randn(vocab_size, d, generator=g)
    position_table = torch.randn(context, d, generator=g)
    got = call("q6", embed_with_positions, ids.clone(), token_table.clone(), position_table.clone())
    tok, pos = token_table[ids], position_table[:t]
    if isinstance(got, torch.Tensor) and got.shape == (t, 2 * d):
        fail("q6", f"the result has shape {tuple(got.shape)}, expected {(t, d)}: the two vectors were "
                   "concatenated instead of added", "x = token vector + position vector, same width d")
    compare("q6", got, tok + pos, name="embed_with_positions(ids, token_table, position_table)", mistakes=[
        ("indexed the position table with the token ids; position k needs row k: position_table[arange(t)]",
         tok + position_table[ids]),
        ("the position vectors are missing: only the token vectors", tok),
        ("only the position vectors: the token vectors are missing", pos),
        ("multiplied the two instead of adding them", tok * pos),
        ("used the whole position table, or its last rows: the text has only t positions, 0 .. t-1",
         tok + position_table[-t:]),
    ], hint="token_table[ids] + position_table[torch.arange(len(ids))]")
    passed("q6", f"token vector + position vector for each of the {t} positions, as in GPT-2")
