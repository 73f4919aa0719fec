"""llmcourse.embeddings against PyTorch and the published formulas, on random inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import embeddings as emb
from llmcourse.attention import attention


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


# --- lookup --------------------------------------------------------------------------------------

def test_one_hot_times_table_is_lookup_and_matches_pytorch(g):
    table = torch.randn(11, 5, generator=g)
    ids = torch.randint(0, 11, (3, 7), generator=g)            # (batch, time)
    expected = F.embedding(ids, table)                          # (3, 7, 5)
    layer = torch.nn.Embedding.from_pretrained(table)
    assert torch.equal(emb.lookup(table, ids), expected)
    assert torch.equal(layer(ids), expected)
    assert torch.allclose(emb.one_hot(ids, 11) @ table, expected)
    assert emb.one_hot(ids, 11).dtype == torch.float32 and emb.one_hot(ids, 11).sum(-1).eq(1).all()


@pytest.mark.parametrize("bad", [torch.tensor([0, 5]), torch.tensor([-1, 2])])
def test_lookup_refuses_ids_outside_the_table_naming_them(bad):
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\) for a table of 5 rows; got ids \[(5|-1)\]"):
        emb.lookup(torch.zeros(5, 3), bad)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        emb.one_hot(bad, 5)


def test_lookup_refuses_float_ids_and_a_table_that_is_not_2d():
    with pytest.raises(ValueError, match="integer tensor"):
        emb.lookup(torch.zeros(5, 3), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"table must be 2-D \(vocab, d\); got shape \(5,\)"):
        emb.lookup(torch.zeros(5), torch.tensor([1]))


def test_gradient_reaches_only_the_rows_that_were_used(g):
    layer = torch.nn.Embedding(10, 4)
    ids = torch.tensor([2, 7, 2])
    (layer(ids) ** 2).sum().backward()
    used = layer.weight.grad.abs().sum(dim=1) > 0
    assert used.nonzero().flatten().tolist() == [2, 7]
    assert torch.allclose(layer.weight.grad[2], 4 * layer.weight[2].detach())  # used twice: 2 * (2 W_2)


# --- similarity ----------------------------------------------------------------------------------

def test_cosine_similarity_matches_pytorch_for_all_shapes(g):
    a, b = torch.randn(4, 6, generator=g) * 3, torch.randn(5, 6, generator=g) * 0.1
    expected = F.cosine_similarity(a[:, None], b[None], dim=-1)   # (4, 5)
    assert torch.allclose(emb.cosine_similarity(a, b), expected, atol=1e-6)
    assert torch.allclose(emb.cosine_similarity(a[0], b), expected[0], atol=1e-6)
    assert torch.allclose(emb.cosine_similarity(a, b[1]), expected[:, 1], atol=1e-6)
    assert torch.allclose(emb.cosine_similarity(a[2], b[3]), expected[2, 3], atol=1e-6)
    assert torch.allclose(emb.cosine_similarity(a, 7 * a).diagonal(), torch.ones(4))  # length does not count


def test_cosine_similarity_refuses_mismatched_widths_naming_the_shapes():
    with pytest.raises(ValueError, match=r"same d; got a \(3, 4\), b \(2, 5\)"):
        emb.cosine_similarity(torch.zeros(3, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"got a \(2, 3, 4\)"):
        emb.cosine_similarity(torch.zeros(2, 3, 4), torch.zeros(2, 4))


def test_nearest_neighbours_excludes_the_word_and_ranks_by_cosine():
    table = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    indices, sims = emb.nearest_neighbours(table, 0, k=3)
    assert indices.tolist() == [1, 2, 3]           # row 0 itself left out; cosine, not the dot product
    assert torch.allclose(sims, F.cosine_similarity(table[0][None], table[[1, 2, 3]], dim=-1))
    assert torch.all(sims[:-1] >= sims[1:])
    with pytest.raises(ValueError, match=r"index must be in \[0, 5\)"):
        emb.nearest_neighbours(table, 5)
    with pytest.raises(ValueError, match="k must be between 1 and vocab - 1 = 4"):
        emb.nearest_neighbours(table, 0, k=5)


# --- words, pairs, skip-gram -----------------------------------------------------------------------

def test_words_vocab_and_pairs():
    assert emb.words("Return True if x is an int.") == ["return", "true", "if", "x", "is", "an", "int"]
    vocab = emb.WordVocab.build("b a b c b a".split(), size=2)
    assert vocab.words == ["b", "a"] and vocab.counts.tolist() == [3.0, 2.0]
    assert vocab.encode("a c b".split()).tolist() == [1, 0]   # "c" is not in the vocabulary
    with pytest.raises(ValueError, match="'c' is not among the 2 words"):
        vocab["c"]
    centres, contexts = emb.skipgram_pairs(torch.tensor([5, 6, 7]), window=1)
    assert sorted(zip(centres.tolist(), contexts.tolist())) == [(5, 6), (6, 5), (6, 7), (7, 6)]
    centres, _ = emb.skipgram_pairs(torch.arange(10), window=3)
    assert len(centres) == 2 * (9 + 8 + 7)


def test_skipgram_loss_matches_the_formula_with_k_noise_words(g):
    model = emb.SkipGram(20, 6, negatives_per_pair=3)
    torch.nn.init.normal_(model.context.weight)
    c, o, noise = torch.randint(0, 20, (9,), generator=g), torch.randint(0, 20, (9,), generator=g), torch.randint(0, 20, (4,), generator=g)
    v, u = model.centre.weight, model.context.weight
    by_pair = [-F.logsigmoid(v[c[b]] @ u[o[b]]) - 3 * sum(F.logsigmoid(-(v[c[b]] @ u[n])) for n in noise) / 4
               for b in range(9)]
    assert torch.allclose(model.loss(c, o, noise), torch.stack(by_pair).mean(), atol=1e-6)


def test_keep_probabilities_drop_frequent_words_only():
    counts = torch.tensor([100_000.0, 10.0, 1.0])
    keep = emb.keep_probabilities(counts, threshold=1e-3)
    f = 100_000 / counts.sum()
    assert math.isclose(keep[0], math.sqrt(1e-3 / f) + 1e-3 / f, rel_tol=1e-6)   # word2vec's formula
    assert keep[0] < 0.05 and keep[1] == 1.0 and keep[2] == 1.0


def test_skipgram_learns_which_words_share_contexts():
    """A synthetic text: 'a' and 'b' appear between the same words, 'c' and 'd' between others."""
    gen = torch.Generator().manual_seed(1)
    # vocabulary: 0 a, 1 b, 2 c, 3 d, 4..7 left/right context words of the two groups
    sentences = []
    for _ in range(2000):
        group = int(torch.randint(0, 2, (1,), generator=gen))
        word = 2 * group + int(torch.randint(0, 2, (1,), generator=gen))
        sentences += [4 + 2 * group, word, 5 + 2 * group]
    ids = torch.tensor(sentences)
    counts = torch.bincount(ids, minlength=8).double()
    result = emb.train_skipgram(ids, counts, dim=8, window=1, epochs=4, batch_size=512, lr=0.05,
                                subsample=1.0, seed=0, progress=False)
    sims = emb.cosine_similarity(result.table, result.table)
    assert sims[0, 1] > 0.5 and sims[2, 3] > 0.5            # same contexts: similar
    assert sims[0, 2] < sims[0, 1] - 0.5                    # different contexts: not similar
    assert result.losses[-1] < result.losses[0]
    first = emb.train_skipgram(ids[:300], counts, dim=8, window=1, epochs=1, batch_size=64, seed=3, progress=False)
    second = emb.train_skipgram(ids[:300], counts, dim=8, window=1, epochs=1, batch_size=64, seed=3, progress=False)
    assert torch.equal(first.table, second.table)          # seeded: reproducible


def test_train_skipgram_refuses_ids_outside_the_counts():
    with pytest.raises(ValueError, match=r"ids must be in \[0, 3\)"):
        emb.train_skipgram(torch.tensor([0, 1, 5]), torch.ones(3), progress=False)


def test_pca_2d_matches_svd_and_pca_lowrank(g):
    x = torch.randn(30, 8, generator=g) * torch.tensor([5.0, 3.0, 1, 1, 1, 1, 1, 1])
    coords = emb.pca_2d(x)
    centred = x - x.mean(0)
    _, _, v = torch.pca_lowrank(x, q=6, center=True, niter=10)
    assert torch.allclose(coords.abs(), (centred @ v[:, :2]).abs(), atol=1e-4)
    # the two axes are uncorrelated and carry the most variance
    assert abs(float(coords[:, 0] @ coords[:, 1])) < 1e-3
    assert coords[:, 0].var() >= coords[:, 1].var()
    with pytest.raises(ValueError, match=r"got shape \(30,\)"):
        emb.pca_2d(x[:, 0])


# --- positions -----------------------------------------------------------------------------------

def test_attention_without_positions_is_permutation_equivariant(g):
    x = torch.randn(7, 8, generator=g)
    wq, wk, wv = (torch.randn(8, 8, generator=g) for _ in range(3))
    perm = torch.randperm(7, generator=g)

    def self_attention(inp):
        return attention(inp @ wq, inp @ wk, inp @ wv)[0]

    assert torch.allclose(self_attention(x[perm]), self_attention(x)[perm], atol=1e-5)
    pe = emb.sinusoidal_positions(7, 8)
    assert not torch.allclose(self_attention(x[perm] + pe), self_attention(x + pe)[perm], atol=1e-3)


def test_sinusoidal_matches_the_papers_formula_element_by_element():
    n, d = 50, 16
    pe = emb.sinusoidal_positions(n, d)
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert math.isclose(pe[pos, 2 * i], math.sin(angle), abs_tol=1e-6)
            assert math.isclose(pe[pos, 2 * i + 1], math.cos(angle), abs_tol=1e-6)


def test_sinusoidal_dot_product_depends_on_the_offset_only():
    pe = emb.sinusoidal_positions(80, 32).double()
    for k in (1, 5, 17):
        dots = (pe[:-k] * pe[k:]).sum(-1)
        assert torch.allclose(dots, dots[0].expand_as(dots), atol=1e-4)


@pytest.mark.parametrize("d", [7, 0, 1, -2])
def test_positions_refuse_an_odd_width(d):
    with pytest.raises(ValueError, match=rf"d_model must be a positive even int .*got {d}"):
        emb.sinusoidal_positions(10, d)
    if d > 0:
        with pytest.raises(ValueError, match=rf"d \(the last axis of x\) must be a positive even int .*got {d}"):
            emb.apply_rope(torch.zeros(3, d))


def rope_complex_reference(x, positions, base=10000.0):
    """RoFormer's complex form: pair j as x_2j + i x_2j+1, multiplied by e^{i m theta_j}."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    z = z * torch.exp(1j * positions.double()[:, None] * theta)
    return torch.view_as_real(z).reshape(x.shape)


@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_rope_matches_the_complex_number_formula(g, base):
    x = torch.randn(2, 3, 9, 12, generator=g)               # (batch, heads, t, d)
    positions = torch.tensor([0, 1, 2, 3, 10, 50, 100, 999, 4096])
    out = emb.apply_rope(x, positions, base=base)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out.double(), rope_complex_reference(x, positions, base), atol=1e-4)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-4)   # a rotation keeps lengths
    assert torch.equal(emb.apply_rope(x)[..., 0, :], x[..., 0, :])       # default positions 0.. ; 0 = identity


def test_rope_score_depends_only_on_the_relative_position(g):
    """q rotated to m and k rotated to n: the same score for (m, n) and (m + s, n + s)."""
    for _ in range(5):
        q, k = torch.randn(1, 16, generator=g, dtype=torch.float64), torch.randn(1, 16, generator=g, dtype=torch.float64)
        m, n, s = (int(v) for v in torch.randint(0, 500, (3,), generator=g))

        def score(a, b):
            return float(emb.apply_rope(q, torch.tensor([a]))[0] @ emb.apply_rope(k, torch.tensor([b]))[0])

        assert math.isclose(score(m, n), score(m + s, n + s), rel_tol=1e-9, abs_tol=1e-9)
        if m != n:  # and it does depend on the distance
            assert not math.isclose(score(m, n), score(m, m), abs_tol=1e-6)


def test_rope_refuses_positions_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"positions must have shape \(t,\) = \(4,\) to match x \(2, 4, 8\); got \(3,\)"):
        emb.apply_rope(torch.zeros(2, 4, 8), torch.arange(3))
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., t, d\); got shape \(8,\)"):
        emb.apply_rope(torch.zeros(8))
