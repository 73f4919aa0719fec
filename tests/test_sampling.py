"""sampling: every step from scores to a distribution against a trusted reference, bad input refused."""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse.data import entropy
from llmcourse.sampling import (SamplingConfig, apply_penalties, min_p_filter, next_token_distribution, sample_from,
                                scale_logits, temperature_softmax, token_counts, top_k_filter, top_p_filter)

INF = math.inf



def random_logits(seed, shape=(4, 50), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# --- temperature -----------------------------------------------------------------------------------

@pytest.mark.parametrize("theta", [0.05, 0.3, 0.7, 1.0, 1.5, 4.0, 100.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_temperature_softmax_equals_torch_softmax_of_scaled_logits(theta, seed):
    z = random_logits(seed)
    torch.testing.assert_close(temperature_softmax(z, theta), torch.softmax(z / theta, dim=-1))
    torch.testing.assert_close(temperature_softmax(z[0], theta), torch.softmax(z[0] / theta, dim=-1))


def test_temperature_zero_is_greedy_and_tiny_temperatures_never_give_nan():
    z = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 5.0]])
    expected = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # a tie goes to the first maximum
    assert torch.equal(temperature_softmax(z, 0), expected)
    assert torch.equal(temperature_softmax(z, 0.0), expected)
    tiny = temperature_softmax(z, 1e-30)   # z / theta would overflow without subtracting the max
    assert torch.isfinite(tiny).all()
    torch.testing.assert_close(tiny[0], expected[0])
    torch.testing.assert_close(tiny[1], torch.tensor([0.5, 0.0, 0.5]))  # a tie shares the mass


def test_temperature_extremes_pointy_and_uniform_and_entropy_increases():
    z = random_logits(3, shape=(30,))
    hot = temperature_softmax(z, 1e4)
    torch.testing.assert_close(hot, torch.full_like(hot, 1 / 30), atol=1e-3, rtol=0)
    thetas = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0]
    entropies = [float(entropy(temperature_softmax(z, t))) for t in thetas]
    assert all(a < b for a, b in zip(entropies, entropies[1:]))
    assert entropies[0] < 0.01 and abs(entropies[-1] - math.log(30)) < 0.1


def test_minus_infinity_logits_stay_impossible():
    z = torch.tensor([0.0, -INF, 1.0, -INF])
    for theta in (0, 0.5, 1, 1e6):
        p = next_token_distribution(z, temperature=theta, top_p=0.9, top_k=3)
        assert torch.isfinite(p).all() and p[1] == 0 and p[3] == 0 and abs(float(p.sum()) - 1) < 1e-6


@pytest.mark.parametrize("bad", [-0.1, -1, float("nan"), float("inf"), "1.0", None, True])
def test_bad_temperature_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        temperature_softmax(torch.zeros(3), bad)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=bad)


def test_bad_logits_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        temperature_softmax(torch.tensor([0.0, float("nan")]), 1.0)
    with pytest.raises(ValueError, match=r"\+inf"):
        temperature_softmax(torch.tensor([0.0, INF]), 1.0)
    with pytest.raises(ValueError, match="every logit of a row is -inf"):
        temperature_softmax(torch.tensor([-INF, -INF]), 1.0)
    with pytest.raises(ValueError, match="floating point"):
        temperature_softmax(torch.tensor([1, 2]), 1.0)
    with pytest.raises(ValueError, match=r"\(vocab,\) or \(batch, vocab\)"):
        temperature_softmax(torch.zeros(2, 3, 4), 1.0)


# --- top-k, top-p, min-p ---------------------------------------------------------------------------

def topk_reference(z, k):
    out = torch.full_like(z, -INF)
    values, indices = torch.topk(z, k, dim=-1)
    return out.scatter(-1, indices, values)


@pytest.mark.parametrize("k", [1, 2, 5, 17, 49, 50])
def test_top_k_equals_a_torch_topk_reference(k):
    z = random_logits(k)
    assert torch.equal(top_k_filter(z, k), topk_reference(z, k))


def test_top_k_edges_and_errors():
    z = torch.tensor([1.0, 3.0, 3.0, 0.0])
    assert torch.equal(top_k_filter(z, 1), torch.tensor([-INF, 3.0, 3.0, -INF]))  # ties with the k-th stay
    assert torch.equal(top_k_filter(z, 10), z) and torch.equal(top_k_filter(z, None), z)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="top_k must be an int >= 1"):
            top_k_filter(z, bad)


def top_p_reference(z, p):
    """The textbook nucleus with a plain Python loop: add tokens by probability until the mass reaches p."""
    probs = torch.softmax(z, -1)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    for row in range(probs.shape[0]):
        order = sorted(range(probs.shape[1]), key=lambda i: -float(probs[row, i]))
        mass = 0.0
        for i in order:
            keep[row, i] = True
            mass += float(probs[row, i])
            if mass >= p:
                break
        smallest = min(float(probs[row, i]) for i in range(probs.shape[1]) if keep[row, i])
        keep[row] |= probs[row] == smallest  # ties with the last token kept
    return z.masked_fill(~keep, -INF)


@pytest.mark.parametrize("p", [1e-9, 0.05, 0.3, 0.5, 0.8, 0.95, 0.999])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_p_equals_a_sort_and_cumsum_reference(p, seed):
    z = random_logits(seed, scale=2.0)
    assert torch.equal(top_p_filter(z, p), top_p_reference(z, p))


def test_top_p_edge_cases():
    z = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda p: (top_p_filter(z, p) > -INF).tolist()
    assert kept(1.0) == [True] * 4                        # p = 1 keeps everything
    assert kept(1e-12) == [True, False, False, False]     # tiny p keeps exactly one token
    assert kept(0.5) == [True, False, False, False]       # 0.5 alone reaches p = 0.5
    assert kept(0.7) == [True, True, False, False]        # 0.3 crosses 0.7, so it is kept
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    ties = torch.tensor([0.4, 0.2, 0.2, 0.2]).log()
    assert (top_p_filter(ties, 0.5) > -INF).tolist() == [True, True, True, True]  # 0.2's tie together
    assert (top_p_filter(ties, 0.4) > -INF).tolist() == [True, False, False, False]
    for bad in (0, -0.1, 1.01, float("nan"), None):
        with pytest.raises(ValueError, match=r"top_p must be a finite number in \(0, 1\]"):
            top_p_filter(z, bad)


def test_min_p_keeps_tokens_relative_to_the_top_one():
    z = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert (min_p_filter(z, 0.5) > -INF).tolist() == [True, True, False, False]   # >= 0.25
    assert torch.equal(min_p_filter(z, 0.0), z)
    with pytest.raises(ValueError, match="min_p"):
        min_p_filter(z, 1.5)


# --- penalties -------------------------------------------------------------------------------------

@pytest.mark.parametrize("presence,frequency", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (1.2, 0.3), (-0.5, -1.0)])
def test_penalties_follow_the_openai_formula(presence, frequency):
    z = random_logits(7, shape=(3, 20))
    counts = torch.randint(0, 4, (3, 20), generator=torch.Generator().manual_seed(1))
    expected = z.clone()
    for b in range(3):
        for j in range(20):
            expected[b, j] = z[b, j] - counts[b, j] * frequency - (1.0 if counts[b, j] > 0 else 0.0) * presence
    torch.testing.assert_close(apply_penalties(z, counts, presence, frequency), expected)


def test_penalties_touch_only_seen_tokens_and_refuse_wrong_shapes():
    z = torch.ones(4)
    counts = token_counts([2, 0, 2], vocab_size=4)
    assert counts.tolist() == [1, 0, 2, 0]
    assert apply_penalties(z, counts, 0.5, 0.2).tolist() == pytest.approx([0.3, 1.0, 0.1, 1.0])
    with pytest.raises(ValueError, match=r"counts must be a tensor with the logits' shape \(4,\)"):
        apply_penalties(z, torch.zeros(5), 0.5, 0.0)
    with pytest.raises(ValueError, match="counts must be"):
        next_token_distribution(z, torch.zeros(2, 4), presence_penalty=1.0)
    with pytest.raises(ValueError, match="counts must have the logits' shape"):
        next_token_distribution(z, torch.zeros(3))
    with pytest.raises(ValueError, match="presence_penalty must be a finite number"):
        apply_penalties(z, counts, float("nan"), 0.0)
    with pytest.raises(ValueError, match="frequency_penalty"):
        SamplingConfig(frequency_penalty=float("inf"))


# --- the composition ----------------------------------------------------------------------------------

def test_the_pipeline_runs_penalties_temperature_top_k_top_p_in_that_order():
    z = random_logits(5, shape=(2, 40))
    counts = torch.randint(0, 3, (2, 40), generator=torch.Generator().manual_seed(2))
    cfg = SamplingConfig(temperature=0.7, top_k=12, top_p=0.8, presence_penalty=0.4, frequency_penalty=0.3)
    manual = apply_penalties(z, counts, 0.4, 0.3)
    manual = torch.softmax(top_p_reference(topk_reference(manual / 0.7, 12), 0.8), -1)
    torch.testing.assert_close(next_token_distribution(z, counts, config=cfg), manual)
    # top-p before temperature would keep a different set: the order matters
    other = torch.softmax(top_p_reference(z, 0.8) / 0.7, -1)
    assert not torch.allclose(next_token_distribution(z, config=SamplingConfig(temperature=0.7, top_p=0.8)), other)
    with pytest.raises(ValueError, match="either config or keyword settings"):
        next_token_distribution(z, config=cfg, temperature=1.0)


def chi_square_critical(df: int, z: float = 3.72) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile; z = 3.72 is the 1 - 1e-4 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_sampling_frequencies_match_the_probabilities():
    probs = next_token_distribution(random_logits(4, shape=(12,), scale=1.0).float(), temperature=0.8, top_k=10)
    n = 40_000
    draws = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))   # (n,)
    observed = torch.bincount(draws, minlength=12).double()
    assert observed[probs == 0].sum() == 0                       # filtered tokens are never drawn
    expected = probs.double()[probs > 0] * n
    chi2 = float(((observed[probs > 0] - expected) ** 2 / expected).sum())
    assert chi2 < chi_square_critical(int((probs > 0).sum()) - 1), chi2
    # the same seed gives the same draws; another seed others
    again = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))
    other = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(1))
    assert torch.equal(draws, again) and not torch.equal(draws, other)


@pytest.mark.parametrize("step", [
    lambda z: scale_logits(z, 0.7), lambda z: scale_logits(z, 0.0), lambda z: temperature_softmax(z, 1.0),
    lambda z: top_k_filter(z, 2), lambda z: top_p_filter(z, 0.9), lambda z: min_p_filter(z, 0.1),
    lambda z: apply_penalties(z, torch.zeros_like(z), 0.5, 0.5), lambda z: next_token_distribution(z)],
    ids=["scale_logits", "scale_logits(0)", "temperature_softmax", "top_k_filter", "top_p_filter", "min_p_filter",
         "apply_penalties", "next_token_distribution"])
def test_every_public_step_refuses_nan_logits_with_the_same_error(step):
    z = torch.tensor([[1.0, float("nan"), 0.5, -1.0], [0.0, 1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="logits contain NaN"):
        step(z)
    step(torch.tensor([[1.0, -INF, 0.5, -1.0], [0.0, 1.0, 2.0, 3.0]]))   # -inf (an impossible token) is fine
