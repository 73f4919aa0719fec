"""Unit 14's KL-regularised objective on a toy policy: each piece against PyTorch or a published formula."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import alignment as al


def toy(k=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    return ref, torch.randn(k, generator=g, dtype=torch.float64)


def test_bradley_terry_loss_is_binary_cross_entropy_on_reward_differences():
    g = torch.Generator().manual_seed(1)
    r_w, r_l = torch.randn(50, generator=g), torch.randn(50, generator=g)
    reference = F.binary_cross_entropy_with_logits(r_w - r_l, torch.ones(50))
    assert torch.allclose(al.bradley_terry_loss(r_w, r_l), reference)
    assert torch.allclose(al.bradley_terry_loss(r_w + 3.0, r_l + 3.0), reference)   # only differences matter


def test_kl_part_of_the_objective_matches_pytorch():
    ref, r = toy()
    p = torch.softmax(torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), 0)
    kl = F.kl_div(ref.log(), p, reduction="sum")                      # KL(p || ref)
    assert torch.allclose(al.kl_regularised_objective(p, ref, r, 0.3), (p * r).sum() - 0.3 * kl)


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_optimal_policy_attains_beta_log_z_and_beats_every_other_policy(beta):
    ref, r = toy()
    best = al.optimal_policy(ref, r, beta)
    value = al.kl_regularised_objective(best, ref, r, beta)
    assert float(value) == pytest.approx(beta * math.log(float((ref * torch.exp(r / beta)).sum())), abs=1e-10)
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        other = torch.softmax(best.log() + 0.5 * torch.randn(8, generator=g, dtype=torch.float64), 0)
        assert al.kl_regularised_objective(other, ref, r, beta) <= value + 1e-12


def test_dpo_loss_of_the_optimal_policy_is_the_bradley_terry_loss_of_the_reward():
    ref, r = toy()
    beta = 0.7
    best = al.optimal_policy(ref, r, beta)
    i, j = torch.randint(8, (2, 40), generator=torch.Generator().manual_seed(4))
    dpo = al.dpo_loss(best.log()[i], best.log()[j], ref.log()[i], ref.log()[j], beta)   # Z cancels
    assert torch.allclose(dpo, al.bradley_terry_loss(r[i], r[j]))


def test_best_of_n_matches_sampling_and_stays_under_the_kl_bound():
    ref, r = toy()
    n = 4
    exact = al.best_of_n_probs(ref, r, n)
    draws = torch.multinomial(ref.expand(100_000, -1), n, replacement=True, generator=torch.Generator().manual_seed(5))
    kept = draws.gather(1, r[draws].argmax(1, keepdim=True)).squeeze(1)
    empirical = torch.bincount(kept, minlength=8).double() / len(kept)
    assert torch.allclose(exact, empirical, atol=0.006)
    assert torch.allclose(al.best_of_n_probs(ref, r, 1), ref)
    kl = float((exact * (exact / ref).log()).where(exact > 0, 0).sum())
    assert kl <= math.log(n) - (n - 1) / n


def test_best_of_n_kl_approaches_the_bound_when_no_answer_is_likely():
    ref = torch.full((2000,), 1 / 2000, dtype=torch.float64)
    r = torch.arange(2000, dtype=torch.float64)
    p = al.best_of_n_probs(ref, r, 8)
    kl = float((p * (p / ref).log()).where(p > 0, 0).sum())
    assert kl == pytest.approx(math.log(8) - 7 / 8, abs=0.01)


def test_reinforce_converges_to_the_optimal_policy():
    ref, r = toy()
    g = torch.Generator().manual_seed(6)
    logits = ref.log().clone()
    for _ in range(400):
        logits = al.reinforce_step(logits, ref, lambda y: r[y], beta=0.5, n_samples=64, lr=0.5, generator=g)
    assert torch.allclose(torch.softmax(logits, 0), al.optimal_policy(ref, r, 0.5), atol=0.03)


def test_bad_inputs_are_refused_with_the_argument_named():
    ref, r = toy()
    with pytest.raises(ValueError, match="ref_probs"):
        al.optimal_policy(ref * 2, r, 1.0)
    with pytest.raises(ValueError, match="beta"):
        al.optimal_policy(ref, r, 0)
    with pytest.raises(ValueError, match="distinct"):
        al.best_of_n_probs(ref, torch.zeros(8, dtype=torch.float64), 2)
