"""MultiHeadAttention against torch.nn.MultiheadAttention, its helpers, and its refusals."""
import pytest
import torch
from torch import nn

from llmcourse.attention import attention, causal_mask
from llmcourse.multihead import (MultiHeadAttention, head_scores, load_from_torch, merge_heads, parameter_count,
                                 split_heads)


def pair(d_model=16, n_heads=4, bias=True, seed=0):
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True)
    if bias:  # PyTorch initialises the biases to zero, which would hide a bias mix-up
        nn.init.normal_(theirs.in_proj_bias)
        nn.init.normal_(theirs.out_proj.bias)
    ours = load_from_torch(MultiHeadAttention(d_model, n_heads, bias=bias), theirs)
    return ours, theirs


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d_model,n_heads,bias", [(16, 4, True), (12, 3, False), (8, 1, True), (32, 8, True)])
def test_equals_torch_multihead_attention(causal, d_model, n_heads, bias):
    ours, theirs = pair(d_model, n_heads, bias)
    x = torch.randn(3, 7, d_model)
    mask = causal_mask(7) if causal else None  # PyTorch: True = may NOT attend
    expected, expected_w = theirs(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
    out_fast, _ = ours(x, causal=causal)
    out, _, w = ours(x, causal=causal, return_weights=True)
    torch.testing.assert_close(out_fast, expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(w, expected_w, rtol=0, atol=1e-6)


def test_copying_really_copies_and_shapes_must_match():
    ours, theirs = pair()
    assert torch.equal(ours.qkv.weight, theirs.in_proj_weight) and torch.equal(ours.proj.bias, theirs.out_proj.bias)
    assert ours.qkv.weight.data_ptr() != theirs.in_proj_weight.data_ptr()
    with pytest.raises(ValueError, match="embed_dim=16, num_heads=4; mha has d_model=16, n_heads=2"):
        load_from_torch(MultiHeadAttention(16, 2), theirs)
    with pytest.raises(ValueError, match="bias settings differ"):
        load_from_torch(MultiHeadAttention(16, 4, bias=False), theirs)
    with pytest.raises(ValueError, match="fused in_proj_weight"):
        load_from_torch(MultiHeadAttention(16, 4), nn.MultiheadAttention(16, 4, kdim=8, vdim=8))
    with pytest.raises(ValueError, match="must be a torch.nn.MultiheadAttention"):
        load_from_torch(MultiHeadAttention(16, 4), nn.Linear(16, 16))


def test_inline_einops_version_equals_the_class():
    ours, _ = pair(d_model=12, n_heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = (split_heads(p, 3) for p in ours.qkv(x).chunk(3, dim=-1))        # (b, h, t, d_head) each
    heads, _ = attention(q, k, v, causal=True)
    expected = ours.proj(merge_heads(heads))
    torch.testing.assert_close(ours(x)[0], expected, rtol=0, atol=1e-6)


def test_split_and_merge_heads_take_contiguous_channel_slices():
    x = torch.arange(2 * 3 * 8.0).reshape(2, 3, 8)
    heads = split_heads(x, 2)
    assert heads.shape == (2, 2, 3, 4)
    assert torch.equal(heads[0, 1, 0], torch.tensor([4.0, 5, 6, 7]))  # head 1 = channels 4..7
    assert torch.equal(merge_heads(heads), x)


def test_cache_gives_the_same_output_as_the_full_sequence():
    ours, _ = pair()
    x = torch.randn(2, 6, 16)
    full, _ = ours(x)
    out, cache = ours(x[:, :4])
    steps = [out]
    for t in range(4, 6):
        out, cache = ours(x[:, t:t + 1], kv_cache=cache)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-6)
    assert cache[0].shape == (2, 4, 6, 4)


@pytest.mark.parametrize("n_heads", [1, 2, 4, 8, 16])
def test_parameter_count_does_not_depend_on_heads(n_heads):
    mha = MultiHeadAttention(128, n_heads)
    assert sum(p.numel() for p in mha.parameters()) == parameter_count(128, n_heads) == 66_048
    assert sum(p.numel() for p in MultiHeadAttention(128, n_heads, bias=False).parameters()) == \
        parameter_count(128, n_heads, bias=False) == 65_536


def test_bad_input_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by n_heads \(4\).*2\.5"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="n_heads must be an int >= 1; got 0"):
        MultiHeadAttention(8, 0)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must be \(batch, time, d_model=8\); got \(5, 8\).*unsqueeze"):
        mha(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"x must be \(batch, time, d_model=8\); got \(2, 5, 6\)"):
        mha(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"kv_cache k must be \(batch, heads, t_past, d_head\) = \(2, 2, 't_past', 4\)"):
        mha(torch.randn(2, 1, 8), kv_cache=(torch.zeros(2, 4, 3, 2), torch.zeros(2, 4, 3, 2)))
    with pytest.raises(ValueError, match=r"d_model \(6\) must be divisible by n_heads \(4\)"):
        split_heads(torch.randn(1, 2, 6), 4)
    with pytest.raises(ValueError, match=r"\(batch, heads, time, d_head\); got shape \(2, 3, 4\)"):
        merge_heads(torch.randn(2, 3, 4))


def test_head_scores_recognise_ideal_heads():
    t = 6
    tokens = torch.tensor([[0, 1, 0, 2, 1, 0]])
    previous = torch.zeros(t, t)
    previous[0, 0] = 1
    previous[torch.arange(1, t), torch.arange(t - 1)] = 1
    uniform = (~causal_mask(t)).float() / torch.arange(1, t + 1)[:, None]
    same = torch.eye(t)  # look at the last earlier copy of the current token, else at yourself
    for q in range(t):
        earlier = [k for k in range(q) if tokens[0, k] == tokens[0, q]]
        if earlier:
            same[q] = 0
            same[q, earlier[-1]] = 1
    scores = head_scores(torch.stack([previous, uniform, same])[None], tokens)
    torch.testing.assert_close(scores["previous"][0], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(scores["entropy"], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    # same-token: queries 2, 4, 5 have an earlier copy (3 of the 5 scored queries)
    torch.testing.assert_close(scores["same_token"][2], torch.tensor(3 / 5, dtype=torch.float64))
    torch.testing.assert_close(scores["same_token"][1], scores["same_token_uniform"])
    with pytest.raises(ValueError, match=r"tokens must be \(batch, t\) = \(1, 6\)"):
        head_scores(torch.stack([previous])[None], tokens[:, :5])
