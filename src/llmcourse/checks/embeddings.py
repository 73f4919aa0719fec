"""Checks for exercises/03_embeddings.ipynb: similarity, sinusoidal and rotary positions, and what a
trained embedding table has learned (neighbours of the digits).

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds), compares with a trusted reference (PyTorch, or the formula of the paper written
independently of the course library), and names the classic mistakes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmcourse.checks.core import call, choice, compare, hint_giver, measured, passed, requires

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "build", "q4": "experiment", "q5": "interpret",
                  "q6": "interpret"}

HINTS = {
    "q1": ("The cosine is the dot product of the two vectors after each has been scaled to length 1.",
           "Divide every row of a, and every row of b, by its own length (a norm over the last axis, keeping "
           "that axis so it broadcasts); then one matrix product gives every pair.",
           "Shape of the code: a_unit = a / (a's row norms, keepdim=True); the same for b; return a_unit "
           "times b_unit transposed, which is (n, m)."),
    "q2": ("Each pair of columns (2i, 2i+1) turns at its own speed: pair i's angle at position pos is pos "
           "divided by 10000 to the power 2i/d_model.",
           "Build a column of positions (n, 1) and a row of the d_model/2 speeds; their ratio is an (n, d/2) "
           "table of angles; sines go to the even columns, cosines to the odd ones.",
           "Shape of the code: angles = positions[:, None] / 10000 ** (torch.arange(0, d_model, 2) / d_model); "
           "then fill a zeros (n, d_model) tensor with slices [:, 0::2] and [:, 1::2]."),
    "q3": ("Take x apart into its even entries and its odd entries: pair j is (x[2j], x[2j+1]), and each "
           "pair is turned like a point in the plane.",
           "The angle of pair j is m * 10000 ** (-2j / d); with c = cos and s = sin of those angles, the new "
           "even entries are even * c - odd * s, the new odd ones even * s + odd * c.",
           "Shape of the code: angles of shape (d/2,); even = x[0::2], odd = x[1::2]; an empty (d,) result "
           "whose [0::2] and [1::2] slices get the two formulas."),
    "q4": ("A character's neighbours are the other rows of the table with the highest cosine similarity to "
           "its row; use your q1 on the whole table at once.",
           "sims = cosine_similarity(table, table) is (V, V); set the diagonal to -inf so that a character is "
           "not its own neighbour; sims[i].topk(5).indices are its 5 nearest.",
           "For each digit, count how many of its 5 nearest are digits; the share is that count summed over "
           "the 10 digits, divided by 50. The same function on the random table gives the baseline."),
    "q5": ("Look at the neighbours themselves: print them for a few digits, capital letters and vowels.",
           "If the order of the character codes explained the neighbours, 'a' (code 97) would sit next to 'b' "
           "or '`', not next to 'A' (code 65)."),
}
hint = hint_giver(HINTS)

DIGITS = "0123456789"
TABLE_LESSONS = ["characters used alike get similar vectors", "neighbours follow the order of the character codes",
                 "the table is still random"]

# Tolerances for the position questions: a correct float32 answer differs from the float64
# reference by about 1e-6 times the angle.
POS_TOL = {"rtol": 1e-4, "atol": 1e-4}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- q1: one-hot ------------------------------------------------------------------------------

def _rows_with_varied_lengths(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x * torch.empty(n, 1, dtype=torch.float64).uniform_(0.2, 5.0, generator=g)  # lengths from 0.2 to 5


def q1(cosine_similarity, seed: int = 0) -> None:
    """cosine_similarity(a (n, d), b (m, d)) -> (n, m): every row of a against every row of b."""
    g = _generator(seed)
    n, m, d = 3 + seed % 3, 4 + seed % 2, 5
    a, b = _rows_with_varied_lengths(g, n, d), _rows_with_varied_lengths(g, m, d)
    got = call("q1", cosine_similarity, a.clone(), b.clone())
    expected = F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)  # (n, m)
    a_len, b_len = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    compare("q1", got, expected, name="cosine_similarity(a, b)", mistakes=[
        ("the plain dot product a @ b.T: divide by both lengths, |a| and |b|", a @ b.T),
        ("only a's rows were normalised; b's rows must have length 1 too", (a / a_len) @ b.T),
        ("only b's rows were normalised; a's rows must have length 1 too", a @ (b / b_len).T),
        ("normalised along the wrong axis (dim 0, down the columns); each row is one vector, so use "
         "norm(dim=-1, keepdim=True)", (a / a.norm(dim=0, keepdim=True)) @ (b / b.norm(dim=0, keepdim=True)).T),
        ("divided by the squared lengths |a|² |b|²; divide by the lengths themselves", (a @ b.T) / (a_len**2 * b_len.T**2)),
    ], hint="cos(a, b) = a·b / (|a| |b|): every row of a and of b must be scaled to length 1")
    passed("q1", f"matches torch.nn.functional.cosine_similarity for all {n}×{m} pairs")


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


def q2(sinusoidal, seed: int = 0) -> None:
    """sinusoidal(n_positions, d_model) -> (n_positions, d_model), PE(pos, 2i) = sin(pos / 10000^(2i/d))."""
    n, d = 12 + seed % 7, 8 + 2 * (seed % 3)
    got = call("q2", sinusoidal, n, d)
    compare("q2", got, _sinusoidal(n, d), name=f"sinusoidal({n}, {d})", **POS_TOL, mistakes=[
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
    passed("q2", f"matches the formula of 'Attention is all you need' for {n} positions × {d} dimensions")


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


def q3(rope_rotate, seed: int = 0) -> None:
    """rope_rotate(x (d,), m) -> (d,): pair (x_2j, x_2j+1) turned by the angle m * 10000^(-2j/d)."""
    g = _generator(seed)
    d, m = 8 + 2 * (seed % 3), 3 + seed % 5
    x = torch.randn(d, generator=g)
    got = call("q3", rope_rotate, x.clone(), m)
    compare("q3", got, _rope_reference(x, m), name=f"rope_rotate(x, m={m})", **POS_TOL, mistakes=[
        ("rotated the wrong pairs: dimension j with j + d/2 (the 'rotate half' layout); here pair j is "
         "(x[2j], x[2j+1]), neighbours", _rope_reference(x, m, halves=True)),
        ("rotated the wrong way (angle -m·θ): x'_2j = x_2j cos - x_2j+1 sin, x'_2j+1 = x_2j sin + x_2j+1 cos",
         _rope_reference(x, -m)),
        ("wrong frequency exponent: θ_j = 10000^(-j/d); it is 10000^(-2j/d)", _rope_reference(x, m, exponent_scale=1.0)),
        ("rotated by (m + 1)·θ: positions count from 0", _rope_reference(x, m + 1)),
        ("returned x unchanged; every pair must be turned by its angle m·θ_j", x.double()),
    ], hint="for j in range(d // 2): angle = m * 10000 ** (-2 * j / d); rotate (x[2j], x[2j+1]) by angle")
    at_zero = call("q3", rope_rotate, x.clone(), 0)
    compare("q3", at_zero, x.double(), name="rope_rotate(x, 0)", **POS_TOL,
            hint="at position 0 every angle is 0: the vector must come back unchanged")
    passed("q3", f"matches the complex form x_j · e^(i m θ_j) for d = {d}, m = {m}; lengths are kept")


# --- q6: token + position embeddings ----------------------------------------------------------


# --- q4: what a trained table learned ------------------------------------------------------------

def experiment_tables() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The shipped character model's token table (V, d), a random table of the same shape, the characters."""
    from llmcourse.checkpoints import load_pretrained
    shipped = load_pretrained("python_docs_char")
    table = shipped.model.tok_emb.weight.detach().clone()
    random_table = torch.randn(table.shape, generator=torch.Generator().manual_seed(0))
    return table, random_table, list(shipped.tokenizer.vocab)


def nearest_characters(table: torch.Tensor, vocab: list[str], char: str, k: int = 5,
                       include_self: bool = False) -> list[str]:
    """The k characters whose rows have the highest cosine similarity with `char`'s row (not itself,
    unless `include_self`: the classic mistake)."""
    sims = F.cosine_similarity(table[vocab.index(char)][None], table, dim=-1)   # (V,)
    if not include_self:
        sims[vocab.index(char)] = -math.inf
    return [vocab[j] for j in sims.topk(k).indices.tolist()]


def digit_share(table: torch.Tensor, vocab: list[str], include_self: bool = False) -> float:
    """Share of digits among the 5 nearest neighbours of each of the 10 digits."""
    hits = sum(n in DIGITS for d in DIGITS for n in nearest_characters(table, vocab, d, include_self=include_self))
    return hits / (5 * len(DIGITS))


def q4(trained_share, random_share, cosine_similarity) -> None:
    """Share of digits among the digits' 5 nearest neighbours, in the trained and in a random table."""
    requires("q4", "q1", "cosine_similarity", lambda: q1(cosine_similarity))
    table, random_table, vocab = experiment_tables()
    expected_trained, expected_random = digit_share(table, vocab), digit_share(random_table, vocab)
    for name, got, expected, other in (("trained_share", trained_share, expected_trained, expected_random),
                                       ("random_share", random_share, expected_random, expected_trained)):
        measured("q4", got, expected, tolerance=1e-9, name=name, what="a share of the 50 neighbours", mistakes=[
            ("counted each digit as its own neighbour: leave a character out of its own list",
             digit_share(table if name == "trained_share" else random_table, vocab, include_self=True)),
            ("given as a count of neighbours, not a share (divide by 50)", expected * 50),
            ("the share of the other table: trained_share is for the shipped model, random_share for the "
             "random table", other),
        ], hint="for each digit, its 5 nearest other characters by cosine similarity; count the digits among them")
    passed("q4", f"{expected_trained:.0%} of the digits' nearest neighbours are digits in the trained table, "
                 f"{expected_random:.0%} in a random one (9 of the other 102 characters are digits: 9%)")


def q5(what_the_table_learned) -> None:
    """What the neighbours in the trained table show."""
    table, random_table, vocab = experiment_tables()
    a_neighbours = nearest_characters(table, vocab, "a")
    choice("q5", what_the_table_learned, TABLE_LESSONS[0], name="what_the_table_learned", options=TABLE_LESSONS,
           why_not={
               TABLE_LESSONS[1]: f"'a' (code 97) has the neighbours {a_neighbours}: 'A' is 32 codes away; the "
                                 "model never sees the codes, only which characters appear in which contexts",
               TABLE_LESSONS[2]: f"a random table gives digits {digit_share(random_table, vocab):.0%} "
                                 f"of the digits' neighbours; the trained one {digit_share(table, vocab):.0%}",
           })
    passed("q5", f"characters that play the same part get similar rows: 'a' is nearest to {a_neighbours}")
