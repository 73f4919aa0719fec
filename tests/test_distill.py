"""llmcourse.distill against PyTorch references: softened softmax, KL, Hinton's loss, the T² scale, training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse import distill
from llmcourse.model import GPT, GPTConfig
from llmcourse.train import sequential_loss


def _pair(seed, shape=(3, 5, 11), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 7.0])
def test_softened_softmax_is_softmax_of_scaled_logits(T):
    z, _ = _pair(0)
    p = distill.softened_softmax(z, T)
    assert torch.allclose(p, torch.softmax(z / T, -1))
    assert torch.allclose(p.sum(-1), torch.ones(p.shape[:-1]))


def test_higher_temperature_is_flatter_and_keeps_the_order():
    z, _ = _pair(1, shape=(20,))
    cold, hot = distill.softened_softmax(z, 1.0), distill.softened_softmax(z, 4.0)
    entropy = lambda p: -(p * p.log()).sum()
    assert entropy(hot) > entropy(cold)
    assert torch.equal(cold.argsort(), hot.argsort())


@pytest.mark.parametrize("seed,T", [(0, 1.0), (1, 2.0), (2, 4.0)])
def test_soft_target_loss_matches_kl_div_batchmean(seed, T):
    s, t = _pair(seed)
    ref = F.kl_div(F.log_softmax(s.reshape(-1, 11) / T, -1), F.softmax(t.reshape(-1, 11) / T, -1),
                   reduction="batchmean")
    assert torch.allclose(distill.soft_target_loss(s, t, T), ref, atol=1e-6)


def test_kl_direction_matters_and_is_zero_on_itself():
    s, t = _pair(3)
    forward = distill.soft_target_loss(s, t, 2.0)          # KL(teacher || student)
    backward = distill.soft_target_loss(t, s, 2.0)         # KL(student || teacher)
    assert not torch.isclose(forward, backward, rtol=1e-3)
    assert distill.soft_target_loss(t, t, 2.0).abs() < 1e-6
    assert forward > 0


@pytest.mark.parametrize("seed,T,alpha", [(0, 1.0, 0.5), (1, 3.0, 0.9), (2, 2.0, 0.0), (3, 4.0, 1.0)])
def test_distillation_loss_matches_pytorch_pieces(seed, T, alpha):
    s, t = _pair(seed)
    y = torch.randint(0, 11, s.shape[:-1], generator=torch.Generator().manual_seed(seed))
    kl = F.kl_div(F.log_softmax(s.reshape(-1, 11) / T, -1), F.softmax(t.reshape(-1, 11) / T, -1), reduction="batchmean")
    ce = F.cross_entropy(s.reshape(-1, 11), y.reshape(-1))
    got = distill.distillation_loss(s, t, y, temperature=T, alpha=alpha)
    assert torch.allclose(got, alpha * T**2 * kl + (1 - alpha) * ce, atol=1e-5)


def test_t_squared_keeps_the_gradient_size_roughly_constant():
    s, t = _pair(4, shape=(8, 30))
    with_t2 = [distill.soft_gradient_norm(s, t, T) for T in (2.0, 5.0, 20.0)]
    without = [distill.soft_gradient_norm(s, t, T, scale_by_t2=False) for T in (2.0, 5.0, 20.0)]
    assert max(with_t2) / min(with_t2) < 1.5                # roughly independent of T
    assert without[0] / without[-1] > 50                    # falls about like 1/T^2 (100x from T=2 to 20)
    for T, a, b in zip((2.0, 5.0, 20.0), with_t2, without):
        assert a == pytest.approx(b * T**2, rel=1e-5)


def test_soft_gradient_matches_the_formula():
    s, t = _pair(5, shape=(4, 9))
    T = 3.0
    z = s.clone().requires_grad_(True)
    distill.soft_target_loss(z, t, T).backward()
    expected = (torch.softmax(s / T, -1) - torch.softmax(t / T, -1)) / T / 4   # mean over 4 rows
    assert torch.allclose(z.grad, expected, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_temperature_is_refused(bad):
    s, t = _pair(0)
    with pytest.raises(ValueError, match="temperature"):
        distill.soft_target_loss(s, t, bad)


def test_bad_shapes_and_alpha_are_refused():
    s, t = _pair(0)
    y = torch.zeros(3, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="same shape"):
        distill.soft_target_loss(s, t[..., :5], 2.0)
    with pytest.raises(ValueError, match="labels"):
        distill.distillation_loss(s, t, y[:, :4], temperature=2.0, alpha=0.5)
    for alpha in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="alpha"):
            distill.distillation_loss(s, t, y, temperature=2.0, alpha=alpha)


def _tiny(seed, n_layers, d_model):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=12, context_length=16, n_layers=n_layers, d_model=d_model, n_heads=2))


def test_teacher_batches_and_distill_train_a_student():
    tokens = torch.arange(600) % 12                         # a perfectly periodic "text"
    teacher = _tiny(0, 2, 16)
    batches = distill.teacher_batches(teacher, tokens, n_batches=4, batch_size=4, context_length=8, seed=0)
    x, y, tl = batches[0]
    assert x.shape == y.shape == (4, 8) and tl.shape == (4, 8, 12)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.allclose(tl, teacher(x)[0])
    student = _tiny(1, 1, 8)
    before = sequential_loss(student, tokens[:200])
    history = distill.distill(student, batches, steps=60, temperature=2.0, alpha=0.5, learning_rate=1e-2)
    assert history.step == list(range(60)) and len(history.train_loss) == 60 and history.val_loss == []
    assert sequential_loss(student, tokens[:200]) < before - 0.5


def test_hard_label_training_needs_no_teacher_and_distill_refuses_missing_targets():
    tokens = torch.arange(300) % 12
    batches = distill.teacher_batches(None, tokens, n_batches=2, batch_size=2, context_length=8)
    assert batches[0][2] is None
    distill.distill(_tiny(1, 1, 8), batches, steps=2, alpha=0.0)
    with pytest.raises(ValueError, match="teacher"):
        distill.distill(_tiny(1, 1, 8), batches, steps=2, alpha=0.5)
    with pytest.raises(ValueError, match="steps"):
        distill.distill(_tiny(1, 1, 8), batches, steps=0, alpha=0.0)
    with pytest.raises(ValueError, match="n_batches"):
        distill.teacher_batches(None, tokens, n_batches=0)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_soft_target_loss_with_a_teacher_that_rules_tokens_out_equals_kl_div(temperature):
    # A top-k teacher: every token outside its top 3 has probability 0 (logit -inf); 0 log 0 = 0.
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4, 6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 6, 10, generator=g, dtype=torch.float64)
    kth = teacher.topk(3, dim=-1).values[..., -1:]
    teacher = teacher.masked_fill(teacher < kth, float("-inf"))
    ours = distill.soft_target_loss(student, teacher, temperature)
    p = torch.softmax(teacher / temperature, -1).flatten(0, 1)
    reference = F.kl_div(F.log_softmax(student / temperature, -1).flatten(0, 1), p, reduction="batchmean")
    assert torch.isfinite(ours) and torch.allclose(ours, reference)
    ours.backward()
    assert torch.isfinite(student.grad).all()
