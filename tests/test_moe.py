"""llmcourse.moe against references: dense computation, the Switch formula, parameter counts."""
import math

import pytest
import torch

from llmcourse.moe import (MoE, Expert, TinyLM, context_windows, dense_reference, load_balancing_loss,
                           moe_parameter_counts, tokens_per_expert, top_k_gating, train_lm)


def test_gating_matches_softmax_over_the_chosen_logits():
    torch.manual_seed(0)
    logits = torch.randn(50, 6, dtype=torch.float64)
    for k in (1, 2, 3, 6):
        gates, idx, probs = top_k_gating(logits, k)
        assert torch.allclose(probs, logits.softmax(-1))
        assert torch.allclose(gates.sum(-1), torch.ones(50, dtype=torch.float64))
        assert ((gates > 0).sum(-1) == k).all()
        chosen = logits.gather(-1, idx).softmax(-1)        # Mixtral's form: top-k logits, then softmax
        assert torch.allclose(gates.gather(-1, idx), chosen)
        assert torch.equal(idx[:, 0], logits.argmax(-1))


def test_gating_worked_example():
    gates, idx, _ = top_k_gating(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 2)
    assert idx.tolist() == [[0, 1]]
    assert torch.allclose(gates, torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1), 0.0, 0.0]]))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_sparse_moe_equals_dense_reference(k):
    torch.manual_seed(k)
    moe = MoE(d_model=8, d_hidden=16, n_experts=4, top_k=k).double()
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    y = moe(x)
    assert y.shape == x.shape
    assert torch.allclose(y, dense_reference(moe, x), atol=1e-12)
    assert moe.last_indices.shape == (21, k)


def test_sparse_moe_gradients_equal_dense_reference():
    torch.manual_seed(0)
    moe = MoE(8, 16, 4, top_k=2).double()
    x = torch.randn(10, 8, dtype=torch.float64)
    moe(x).square().sum().backward()
    sparse = [p.grad.clone() for p in moe.parameters()]
    moe.zero_grad()
    dense_reference(moe, x).square().sum().backward()
    for a, p in zip(sparse, moe.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-10)


def test_load_balancing_loss_formula():
    torch.manual_seed(0)
    probs = torch.randn(30, 5).softmax(-1)
    idx = probs.argmax(-1)
    f = torch.tensor([(idx == i).float().mean() for i in range(5)])
    assert torch.allclose(load_balancing_loss(probs, idx), 5 * (f * probs.mean(0)).sum())
    # uniform router, balanced assignment: exactly 1; everything on one expert with certainty: N_E
    uniform = torch.full((8, 4), 0.25)
    assert torch.allclose(load_balancing_loss(uniform, torch.arange(8) % 4), torch.tensor(1.0))
    collapsed = torch.zeros(8, 4)
    collapsed[:, 2] = 1
    assert torch.allclose(load_balancing_loss(collapsed, torch.full((8,), 2)), torch.tensor(4.0))


def test_load_balancing_loss_gradient_flows_only_through_probs():
    logits = torch.randn(12, 3, requires_grad=True)
    gates, idx, probs = top_k_gating(logits, 1)
    load_balancing_loss(probs, idx).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_tokens_per_expert_keeps_empty_experts():
    assert tokens_per_expert(torch.tensor([[0, 2], [0, 1], [2, 0]]), 4).tolist() == [3, 1, 2, 0]


def test_parameter_counts_match_module():
    for d, h, E, k in [(8, 32, 4, 1), (5, 7, 3, 2), (16, 64, 8, 2)]:
        moe = MoE(d, h, E, k)
        total, active = moe_parameter_counts(d, h, E, k)
        assert total == sum(p.numel() for p in moe.parameters())
        expert = sum(p.numel() for p in moe.experts[0].parameters())
        assert active == moe.router.weight.numel() + k * expert
    assert moe_parameter_counts(8, 32, 4, 1) == (2240, 584)
    assert moe_parameter_counts(8, 32, 4, 1, bias=False)[0] == 32 + 4 * 512


def test_tiny_lm_trains_and_windows():
    x, y = context_windows(torch.tensor([5, 6, 7, 8, 9]), 2, torch.tensor([0, 2]))
    assert x.tolist() == [[5, 6], [7, 8]] and y.tolist() == [7, 9]
    tokens = torch.arange(2000) % 7                          # perfectly predictable
    torch.manual_seed(0)
    model = TinyLM(7, 3, 16, MoE(16, 32, 4, 2))
    hist = train_lm(model, tokens, tokens, steps=60, batch_size=64, eval_every=20, aux_weight=0.01)
    assert hist.val_step == [0, 20, 40, 60] and hist.step == list(range(60)) and len(hist.train_loss) == 60
    assert hist.val_loss[-1] < 0.3 * hist.val_loss[0]
    dense = TinyLM(7, 3, 16, Expert(16, 32))
    assert dense(x.new_zeros(4, 3)).shape == (4, 7)


@pytest.mark.parametrize("call, match", [
    (lambda: top_k_gating(torch.randn(3, 4), 5), "k must be"),
    (lambda: top_k_gating(torch.randn(4), 1), "logits must be"),
    (lambda: MoE(4, 8, 3, top_k=4), "top_k"),
    (lambda: MoE(4, 8, 0), "n_experts"),
    (lambda: MoE(4, 8, 2)(torch.randn(2, 5)), "d_model=4"),
    (lambda: tokens_per_expert(torch.tensor([0, 4]), 4), "indices must lie"),
    (lambda: tokens_per_expert(torch.tensor([0.0]), 4), "integer"),
    (lambda: load_balancing_loss(torch.rand(3, 2), torch.tensor([0, 1])), "one row per token"),
    (lambda: moe_parameter_counts(4, 8, 2, 3), "top_k"),
    (lambda: TinyLM(5, 3, 8, Expert(8, 8))(torch.zeros(2, 4, dtype=torch.long)), "n_context=3"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
