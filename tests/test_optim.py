"""llmcourse.optim: Adam from scratch equals PyTorch's Adam and AdamW; EMA windows; optimizer memory."""
import math

import pytest
import torch

from llmcourse.optim import (adafactor_second_moment, adafactor_state_bytes, adam_state_bytes, adam_step, ema,
                             ema_window)


@pytest.mark.parametrize("torch_cls,weight_decay", [(torch.optim.Adam, 0.0), (torch.optim.AdamW, 0.1)])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_step_equals_torch(torch_cls, weight_decay, betas):
    g = torch.Generator().manual_seed(0)
    start = torch.randn(5, 3, generator=g, dtype=torch.float64)
    grads = [torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(8)]
    p = torch.nn.Parameter(start.clone())
    opt = torch_cls([p], lr=0.05, betas=betas, eps=1e-8, weight_decay=weight_decay)
    mine, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, grad in enumerate(grads, start=1):
        p.grad = grad.clone()
        opt.step()
        mine, m, v = adam_step(mine, grad, m, v, t, lr=0.05, beta1=betas[0], beta2=betas[1], eps=1e-8,
                               weight_decay=weight_decay)
        torch.testing.assert_close(mine, p.detach(), rtol=1e-12, atol=1e-12)
    state = opt.state[p]
    torch.testing.assert_close(m, state["exp_avg"])
    torch.testing.assert_close(v, state["exp_avg_sq"])


def test_adam_step_does_not_change_inputs_and_first_step_is_lr_times_sign():
    p, grad = torch.tensor([1.0, -2.0]), torch.tensor([3.0, -0.01])
    m, v = torch.zeros(2), torch.zeros(2)
    new, _, _ = adam_step(p, grad, m, v, 1, lr=0.1)
    torch.testing.assert_close(new, torch.tensor([0.9, -1.9]), rtol=0, atol=1e-5)
    assert p.tolist() == [1.0, -2.0] and m.sum() == 0 and v.sum() == 0


def test_adam_step_rejects_bad_input():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="step counts from 1"):
        adam_step(z, z, z, z, 0)
    with pytest.raises(ValueError, match="beta2"):
        adam_step(z, z, z, z, 1, beta2=1.0)
    with pytest.raises(ValueError, match="share one shape"):
        adam_step(z, torch.zeros(3), z, z, 1)


def test_ema_and_window():
    assert ema([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)
    assert ema([1.0, 0.0], 0.5) == pytest.approx([1.0, 1 / 3])   # (0.5*0.5*1) / (1 - 0.25)
    assert ema_window(0.9) == pytest.approx(10)
    assert ema_window(0.999) == pytest.approx(1000)
    # the window is the sum of the weights' reach: weights (1-β) β^k sum to 1 over about 1/(1-β) terms
    beta = 0.95
    weights = [(1 - beta) * beta ** k for k in range(10_000)]
    assert sum(weights) == pytest.approx(1.0)
    assert sum(k * w for k, w in enumerate(weights)) == pytest.approx(ema_window(beta) - 1)
    with pytest.raises(ValueError, match="beta"):
        ema_window(1.0)
    with pytest.raises(ValueError, match="beta"):
        ema([1.0], -0.1)


def test_state_bytes_match_real_optimizer_state():
    p = torch.nn.Parameter(torch.randn(7, 11))
    opt = torch.optim.Adam([p])
    p.grad = torch.randn(7, 11)
    opt.step()
    real = sum(t.numel() * t.element_size() for t in opt.state[p].values() if t.dim() > 0)
    assert adam_state_bytes((7, 11)) == real
    assert adafactor_state_bytes((7, 11)) == (7 + 11) * 4
    assert adafactor_state_bytes((5,)) == 20
    assert adafactor_state_bytes((3, 7, 11), dtype_bytes=2) == 3 * 18 * 2
    assert adam_state_bytes((1024, 4096), dtype_bytes=2) == 2 * 1024 * 4096 * 2
    with pytest.raises(ValueError, match="shape"):
        adam_state_bytes((0, 3))
    with pytest.raises(ValueError, match="shape"):
        adafactor_state_bytes(())


def test_adafactor_second_moment_is_exact_for_rank_one_and_keeps_sums():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, generator=g) + 0.1, torch.rand(4, generator=g) + 0.1
    grad = torch.outer(a, b)                      # squared: outer(a², b²), rank 1
    torch.testing.assert_close(adafactor_second_moment(grad), grad ** 2)
    noisy = torch.randn(6, 4, generator=g)
    est = adafactor_second_moment(noisy)
    torch.testing.assert_close(est.sum(1), (noisy ** 2).sum(1))   # row sums kept exactly
    torch.testing.assert_close(est.sum(0), (noisy ** 2).sum(0))   # column sums kept exactly
    assert not torch.allclose(est, noisy ** 2)
    assert math.isclose(est.sum().item(), (noisy ** 2).sum().item(), rel_tol=1e-5)
    with pytest.raises(ValueError, match="matrix"):
        adafactor_second_moment(torch.zeros(3))
