import math

import pytest
import torch

from llmcourse import context
from llmcourse.model import GPT, GPTConfig


def test_favourite_task_shapes_and_frequency():
    g = torch.Generator().manual_seed(0)
    tokens, fav = context.favourite_token_task(2000, 20, 8, 0.5, generator=g)
    assert tokens.shape == (2000, 20) and fav.shape == (2000,) and tokens.dtype == torch.long
    share = (tokens == fav[:, None]).float().mean().item()
    assert abs(share - (0.5 + 0.5 / 8)) < 0.01                  # favourite: p + (1 - p) / V
    overall = torch.bincount(tokens.flatten(), minlength=8).float() / tokens.numel()
    assert (overall - 1 / 8).abs().max() < 0.01                  # across the data, every token equally likely


def test_favourite_task_bad_input():
    with pytest.raises(ValueError, match="p_favourite"):
        context.favourite_token_task(1, 4, 4, 1.5)
    with pytest.raises(ValueError, match="vocab_size"):
        context.favourite_token_task(1, 4, 0)


def test_count_predictions_matches_loop():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(5, (6, 12), generator=g)
    got = context.count_predictions(tokens, 5)
    for b in range(6):
        for t in range(12):
            counts = torch.bincount(tokens[b, :t + 1], minlength=5)
            assert got[b, t] == int(torch.nonzero(counts == counts.max())[0])
    with pytest.raises(ValueError, match="tokens"):
        context.count_predictions(tokens.float(), 5)


def test_accuracy_by_position():
    p = torch.tensor([[1, 2, 3], [1, 0, 3]])
    t = torch.tensor([[1, 2, 0], [0, 0, 3]])
    assert context.accuracy_by_position(p, t).tolist() == [0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="same shape"):
        context.accuracy_by_position(p, t[:, :2])


def test_few_shot_prompt():
    assert context.few_shot_prompt([("2+2", "4"), ("3+5", "8")], "1+6") == "Q: 2+2\nA: 4\nQ: 3+5\nA: 8\nQ: 1+6\nA:"
    assert context.few_shot_prompt([], "hi") == "Q: hi\nA:"
    with pytest.raises(ValueError, match=r"examples\[0\]"):
        context.few_shot_prompt(["oops"], "q")


def test_flops_against_matmul_shapes():
    T, d = 37, 24
    # Q K^T is (T, d) x (d, T); weights x V is (T, T) x (T, d): multiply-adds = T*T*d each, 2 FLOPs apiece
    assert context.attention_flops(T, d) == 2 * (2 * T * T * d)
    # the weight matrices of one block of the course's GPT, without biases, times 2 FLOPs per token
    cfg = GPTConfig(vocab_size=10, context_length=T, n_layers=1, d_model=d, n_heads=4, bias=False)
    block = GPT(cfg).blocks[0]
    weights = sum(p.numel() for name, p in block.named_parameters() if p.dim() == 2)
    assert context.projection_flops(T, d) == 2 * T * weights
    d = 96
    T = context.crossover_length(d)
    assert context.attention_flops(T, d) == context.projection_flops(T, d)
    assert context.attention_flops(T + 1, d) > context.projection_flops(T + 1, d)
    with pytest.raises(ValueError, match="T must"):
        context.attention_flops(0, 4)


def test_kv_cache_bytes_matches_a_real_cache():
    cfg = GPTConfig(vocab_size=11, context_length=20, n_layers=3, d_model=16, n_heads=2)
    model = GPT(cfg).eval()
    idx = torch.randint(11, (2, 13))
    _, _, cache = model(idx, return_cache=True)
    real = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in cache)
    assert context.kv_cache_bytes(3, 13, 16, dtype_bytes=4, batch_size=2) == real
    assert context.kv_cache_bytes(4, 64, 128, 4) == 262_144
    with pytest.raises(ValueError, match="dtype_bytes"):
        context.kv_cache_bytes(1, 1, 1, dtype_bytes=3)
    assert math.isclose(context.kv_cache_bytes(1, 10, 1) / context.kv_cache_bytes(1, 5, 1), 2.0)
