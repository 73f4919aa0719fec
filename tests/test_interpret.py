"""llmcourse.interpret against direct formulas and PyTorch, on random inputs; bad inputs refused."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import interpret
from llmcourse.model import GPT, GPTConfig


def _direct_ece(conf, correct, n_bins):
    """ECE by a plain loop over predictions and bins (the textbook formula)."""
    total = 0.0
    n = len(conf)
    for b in range(n_bins):
        members = [i for i in range(n) if min(int(math.floor(float(conf[i]) * n_bins)), n_bins - 1) == b]
        if members:
            acc = sum(bool(correct[i]) for i in members) / len(members)
            mean_conf = sum(float(conf[i]) for i in members) / len(members)
            total += len(members) / n * abs(acc - mean_conf)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_matches_direct_formula(seed, n_bins):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(300, generator=g, dtype=torch.float64)
    correct = torch.rand(300, generator=g, dtype=torch.float64) < conf ** 2
    got = interpret.expected_calibration_error(conf, correct, n_bins)
    assert math.isclose(float(got), _direct_ece(conf, correct, n_bins), rel_tol=1e-12, abs_tol=1e-12)
    assert float(got) > 0.01  # this data is overconfident: the ECE is clearly not zero


def test_reliability_bins_counts_and_empty_bins():
    conf = torch.tensor([0.05, 0.15, 0.17, 0.95, 1.0], dtype=torch.float64)
    correct = torch.tensor([False, True, False, True, True])
    bins = interpret.reliability_bins(conf, correct, 10)
    assert bins.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins.accuracy[1] == 0.5 and math.isclose(float(bins.confidence[1]), 0.16)
    assert torch.isnan(bins.accuracy[2]) and torch.isnan(bins.confidence[5])
    assert bins.edges.tolist() == torch.linspace(0, 1, 11, dtype=torch.float64).tolist()


def test_perfectly_calibrated_data_has_small_ece():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(200_000, generator=g, dtype=torch.float64)
    correct = torch.rand(200_000, generator=g, dtype=torch.float64) < conf   # right with probability conf
    assert float(interpret.expected_calibration_error(conf, correct)) < 0.01


def test_top1_confidence():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    conf, pred, correct = interpret.top1_confidence(logits, torch.tensor([[0, 1]]))
    assert pred.tolist() == [0, 2] and correct.tolist() == [True, False]
    assert torch.allclose(conf, torch.softmax(logits.double(), -1).amax(-1).flatten())


def test_kl_matches_torch_and_flip_rate():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(20, 7, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(20, 7, generator=g, dtype=torch.float64), -1)
    expected = F.kl_div(q.log(), p, reduction="none").sum(-1)
    assert torch.allclose(interpret.kl_divergence(p, q), expected)
    assert torch.allclose(interpret.kl_divergence(p, p), torch.zeros(20, dtype=torch.float64))
    p0 = p.clone(); p0[:, 0] = 0; p0 /= p0.sum(-1, keepdim=True)
    assert torch.isfinite(interpret.kl_divergence(p0, q)).all()
    flips = (p.argmax(-1) != q.argmax(-1)).float().mean()
    assert interpret.top1_flip_rate(p, q) == flips and 0 < flips < 1
    assert interpret.top1_flip_rate(p, p) == 0


def test_induction_targets_and_score():
    tokens = torch.tensor([[4, 2, 9, 4, 2, 9]])
    assert interpret.induction_targets(tokens).tolist() == [[-1, -1, -1, 1, 2, 3]]
    t = 6
    perfect = torch.zeros(1, 2, t, t)
    perfect[0, :, 0, 0] = 1
    for i in range(1, t):
        perfect[0, 0, i, i - 1] = 1                                   # head 0: previous token
    for i in range(1, 3):
        perfect[0, 1, i, i] = 1
    for i in range(3, 6):
        perfect[0, 1, i, i - 3 + 1] = 1                               # head 1: induction
    score = interpret.induction_score(perfect, tokens)
    assert score.tolist() == [0.0, 1.0]


def test_induction_score_equals_offset_formula_on_repeated_sequences():
    g = torch.Generator().manual_seed(5)
    L = 7
    tokens = torch.randperm(50, generator=g)[:L].repeat(2)[None]      # distinct tokens, repeated
    w = torch.randn(1, 3, 2 * L, 2 * L, generator=g).masked_fill(torch.ones(2 * L, 2 * L).triu(1).bool(), -1e9)
    w = w.softmax(-1)
    i = torch.arange(L, 2 * L)
    assert torch.allclose(interpret.induction_score(w, tokens), w[0][:, i, i - L + 1].mean(-1).double())


def test_repeated_sequences_and_attention_maps_match_model():
    torch.manual_seed(0)
    seqs = interpret.repeated_random_sequences(4, 5, 11, torch.Generator().manual_seed(0))
    assert seqs.shape == (4, 10) and torch.equal(seqs[:, :5], seqs[:, 5:])
    assert all(len(set(row[:5].tolist())) == 5 for row in seqs)            # distinct within a segment
    assert (interpret.induction_targets(seqs)[:, 5:] == torch.arange(1, 6)).all()
    model = GPT(GPTConfig(vocab_size=11, context_length=10, n_layers=2, d_model=16, n_heads=2)).eval()
    maps = interpret.attention_maps(model, seqs)
    assert len(maps) == 2 and maps[0].shape == (4, 2, 10, 10)
    assert torch.allclose(maps[1].sum(-1), torch.ones(4, 2, 10))
    assert (maps[0].triu(1) == 0).all()                                     # causal
    # the manual pass through the blocks reproduces the model's own logits
    hooked = []
    model.blocks[1].attn.register_forward_hook(lambda m, i, o: hooked.append(o[0]))
    model(seqs)
    pos = torch.arange(10)
    x = model.tok_emb(seqs) + model.pos_emb(pos)
    x = model.blocks[0](x)[0]
    _, _, w = model.blocks[1].attn(model.blocks[1].ln1(x), causal=True, return_weights=True)
    assert torch.allclose(w, maps[1])
    first, second = interpret.split_half_losses(model, seqs)
    assert first > 0 and second > 0


def test_next_token_probs_and_brittleness():
    from llmcourse.tokenizers import CharTokenizer
    tok = CharTokenizer("abcd ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=8, n_layers=1, d_model=8, n_heads=1)).eval()
    p = interpret.next_token_probs(model, tok.encode("abcabcabcd"))      # longer than context: cropped
    assert p.shape == (5,) and math.isclose(float(p.sum()), 1.0)
    rows = interpret.brittleness(model, tok, "abc", ["abc", "abd"])
    assert rows[0]["kl"] == 0 and not rows[0]["flipped"] and rows[1]["kl"] > 0


@pytest.mark.parametrize("call, message", [
    (lambda: interpret.expected_calibration_error(torch.tensor([0.5, 1.5]), torch.tensor([True, False])), "confidences"),
    (lambda: interpret.expected_calibration_error(torch.tensor([0.5]), torch.tensor([True, False])), "correct"),
    (lambda: interpret.reliability_bins(torch.tensor([0.5]), torch.tensor([True]), 0), "n_bins"),
    (lambda: interpret.kl_divergence(torch.ones(3) / 3, torch.ones(4) / 4), "same shape"),
    (lambda: interpret.top1_flip_rate(torch.ones(2, 3), torch.ones(3, 3)), "same shape"),
    (lambda: interpret.induction_score(torch.ones(2, 3, 3), torch.zeros(2, 3, dtype=torch.long)), "weights"),
    (lambda: interpret.induction_score(torch.ones(1, 1, 3, 3), torch.tensor([[1, 2, 3]])), "no token repeats"),
    (lambda: interpret.repeated_random_sequences(2, 0, 5), "segment_length"),
    (lambda: interpret.repeated_random_sequences(2, 6, 5), "at most vocab_size"),
    (lambda: interpret.top1_confidence(torch.ones(2, 3, 5), torch.zeros(2, dtype=torch.long)), "targets"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_kl_divergence_is_infinite_where_q_rules_out_what_p_allows():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    q = torch.tensor([[0.5, 0.0, 0.5], [0.25, 0.25, 0.5]])
    kl = interpret.kl_divergence(p, q)
    torch_kl = F.kl_div(q.double().log(), p.double(), reduction="none").sum(-1)
    assert kl[0] == math.inf and torch_kl[0] == math.inf
    assert kl[1] == pytest.approx(math.log(2)) and torch.allclose(kl[1:], torch_kl[1:])
    assert interpret.kl_divergence(q, q).tolist() == [0.0, 0.0]
