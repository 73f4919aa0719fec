"""The GPT and the counts made from its config: checked against a built model and PyTorch."""
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.model import (GPT, GPTConfig, count_parameter_tensors, count_parameters, eval_mode, memory_bytes,
                             training_flops_per_token, unwrap)

TINY = GPTConfig(vocab_size=11, context_length=16, n_layers=2, d_model=32, n_heads=4)


def random_configs(n, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        heads = rng.choice([1, 2, 3, 4])
        yield GPTConfig(vocab_size=rng.randint(2, 80), context_length=rng.randint(1, 40),
                        n_layers=rng.randint(1, 3), d_model=heads * rng.randint(1, 12), n_heads=heads,
                        dropout=rng.choice([0.0, 0.1]), tie_weights=rng.random() < 0.5, bias=rng.random() < 0.5)


def test_forward_shapes_and_loss_is_cross_entropy_of_the_logits():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 11, (3, 16))
    targets = torch.randint(0, 11, (3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 11)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    assert model(idx)[1] is None
    # Fresh model: nearly uniform predictions, loss close to log(vocab).
    assert abs(loss.item() - math.log(11)) < 0.1


def test_the_model_is_causal_a_token_never_sees_the_future():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 11, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 11
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_weight_tying_shares_one_matrix_and_untied_does_not():
    tied, untied = GPT(TINY), GPT(GPTConfig(**{**TINY.to_dict(), "tie_weights": False}))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 11 * 32


def test_count_parameters_equals_the_built_model_for_many_configs():
    for config in random_configs(40):
        model = GPT(config)
        assert count_parameters(config) == sum(p.numel() for p in model.parameters()), config
        assert count_parameter_tensors(config) == len(list(model.parameters())), config


def test_count_parameters_of_nanogpts_cpu_configuration():
    # 4 blocks of 12 d^2 weights + 9 d biases + 4 d LayerNorm, embeddings, final LayerNorm.
    config = GPTConfig(vocab_size=65, context_length=64, n_layers=4, d_model=128, n_heads=4)
    d = 128
    assert count_parameters(config) == 4 * (12 * d * d + 9 * d + 4 * d) + 65 * d + 64 * d + 2 * d == 809_856


def matmul_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Attention spelled out with matmuls, so that the FLOP counter sees QK^T and weights @ V."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        t = q.shape[-2]
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("tie", [True, False])
def test_training_flops_per_token_matches_pytorchs_flop_counter(monkeypatch, tie):
    monkeypatch.setattr("llmcourse.multihead.F.scaled_dot_product_attention", matmul_attention)
    config = GPTConfig(vocab_size=50, context_length=16, n_layers=2, d_model=32, n_heads=4, tie_weights=tie)
    model = GPT(config)
    B, T = 4, 16
    idx = torch.randint(0, 50, (B, T))
    counter = FlopCounterMode(display=False)
    with counter:
        model(idx, idx)[1].backward()
    # The counter counts matrix multiplications only; 6 N also counts the biases and LayerNorm
    # parameters (2 per bias in 3 passes), which are cheap element-wise work.
    d, L = 32, 2
    elementwise_params = L * (9 * d + 4 * d) + 2 * d
    assert counter.get_total_flops() / (B * T) == training_flops_per_token(config) - 6 * elementwise_params


def test_memory_bytes_weights_gradients_and_adamw_state_are_exact():
    for config in random_configs(6, seed=1):
        model = GPT(config)
        estimate = memory_bytes(config, batch_size=2)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        idx = torch.randint(0, config.vocab_size, (2, config.context_length))
        optimizer = torch.optim.AdamW(model.parameters())
        model(idx, idx)[1].backward()
        grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
        optimizer.step()
        state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values())
        assert (estimate["weights"], estimate["gradients"], estimate["optimizer"]) == (weights, grads, state)
        assert estimate["total"] == sum(v for k, v in estimate.items() if k != "total")
    assert memory_bytes(TINY, 1, dtype_bytes=2)["weights"] == 2 * count_parameters(TINY)


def saved_activation_bytes(model, idx):
    """Bytes of the tensors autograd keeps for the backward pass, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, idx)
    return sum(n for ptr, n in seen.items() if ptr not in params and n > 0)


@pytest.mark.parametrize("config", [TINY, GPTConfig(vocab_size=60, context_length=24, n_layers=3, d_model=48,
                                                     n_heads=3, bias=False, tie_weights=False)])
def test_memory_bytes_activations_match_what_autograd_saves(config):
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (4, config.context_length))
    measured = saved_activation_bytes(model, idx)
    estimate = memory_bytes(config, batch_size=4)["activations"]
    assert abs(estimate - measured) / measured < 0.05, (estimate, measured)


def test_kv_cache_decoding_gives_the_same_logits_as_the_full_forward():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 11, (2, 12))
    full = model(idx)[0]
    logits, _, cache = model(idx[:, :8], return_cache=True)
    steps = [logits]
    for t in range(8, 12):
        logits, _, cache = model(idx[:, t:t + 1], kv_cache=cache, return_cache=True)
        steps.append(logits)
    assert len(cache) == TINY.n_layers and cache[0][0].shape == (2, 4, 12, 8)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_generate_extends_by_max_new_tokens_reproducibly():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    prompt = torch.zeros(2, 20, dtype=torch.long)  # longer than the context: generate crops it
    a = model.extend(prompt, 5, generator=torch.Generator().manual_seed(1))
    b = model.extend(prompt, 5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 25) and torch.equal(a, b) and torch.equal(a[:, :20], prompt)
    greedy = model.extend(prompt[:, :3], 4, temperature=0)
    expected = prompt[:, :3]
    for _ in range(4):
        expected = torch.cat([expected, model(expected)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, expected)


def test_dropout_is_active_in_training_and_off_in_eval():
    model = GPT(GPTConfig(**{**TINY.to_dict(), "dropout": 0.5}))
    idx = torch.randint(0, 11, (2, 8))
    assert not torch.equal(model.train()(idx)[0], model(idx)[0])
    assert torch.equal(model.eval()(idx)[0], model(idx)[0])


@pytest.mark.parametrize("fields, message", [
    ({"d_model": 30, "n_heads": 4}, r"d_model \(30\) must be divisible by n_heads \(4\)"),
    ({"n_layers": 0}, r"n_layers must be an int >= 1; got 0"),
    ({"vocab_size": 2.5}, r"vocab_size must be an int >= 1"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
])
def test_bad_config_is_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY.to_dict(), **fields})


def test_unknown_config_field_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown GPTConfig fields \['n_embd'\]"):
        GPTConfig.from_dict({**TINY.to_dict(), "n_embd": 32})


def test_context_longer_than_the_model_is_a_clear_error():
    model = GPT(TINY)
    with pytest.raises(ValueError, match=r"17 positions .* context_length is 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    _, _, cache = model(torch.zeros(1, 16, dtype=torch.long), return_cache=True)
    with pytest.raises(ValueError, match=r"17 positions \(16 cached \+ 1 new\)"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_wrong_idx_and_targets_are_clear_errors():
    model = GPT(TINY)
    with pytest.raises(ValueError, match=r"idx must be \(batch, time\) int64"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"idx must be \(batch, time\) int64"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"targets must have idx's shape \(1, 4\)"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def test_memory_bytes_refuses_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        memory_bytes(TINY, 0)


def test_unwrap_finds_the_gpt_inside_ddp_and_compile_wrappers():
    model = GPT(GPTConfig(vocab_size=5, context_length=4, n_layers=1, d_model=8, n_heads=2))

    class Wrapper(torch.nn.Module):            # the attribute names DDP (.module) and torch.compile (._orig_mod) use
        def __init__(self, name, inner):
            super().__init__()
            setattr(self, name, inner)

    assert unwrap(model) is model
    assert unwrap(Wrapper("module", model)) is model
    assert unwrap(Wrapper("_orig_mod", model)) is model
    assert unwrap(Wrapper("module", Wrapper("_orig_mod", model))) is model
    with pytest.raises(ValueError, match="expected an llmcourse.model.GPT .*got Linear"):
        unwrap(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode_the_model_was_in_even_after_an_error(training):
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(3, 3)).train(training)
    with eval_mode(model) as inside:
        assert inside is model and not model.training and not model[0].training
    assert model.training is training and model[0].training is training
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training is training
