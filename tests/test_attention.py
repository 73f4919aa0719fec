"""attention.py against PyTorch's scaled_dot_product_attention, gradcheck, masks and bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.attention import attention, causal_mask, padding_mask

SHAPES = [  # (leading axes, t_q, t_k, d_k, d_v)
    ((), 5, 5, 8, 8),            # one sequence, no batch
    ((3,), 4, 7, 16, 5),         # batch, t_q != t_k
    ((2, 4), 6, 6, 8, 8),        # batch and heads
    ((2, 3), 3, 9, 4, 12),       # batch and heads, t_q < t_k (a cache of earlier keys)
]


def qkv(lead, t_q, t_k, d_k, d_v, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, t_q, d_k, generator=g, dtype=dtype),
            torch.randn(*lead, t_k, d_k, generator=g, dtype=dtype),
            torch.randn(*lead, t_k, d_v, generator=g, dtype=dtype))


def assert_matches_sdpa(q, k, v, ours_kwargs, sdpa_kwargs):
    out, weights = attention(q, k, v, **ours_kwargs)
    expected = F.scaled_dot_product_attention(q, k, v, **sdpa_kwargs)
    assert out.shape == expected.shape == (*q.shape[:-1], v.shape[-1])
    assert weights.shape == (*q.shape[:-1], k.shape[-2])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), rtol=0, atol=1e-6)
    return weights


@pytest.mark.parametrize("shape", SHAPES)
def test_no_mask_equals_sdpa(shape):
    q, k, v = qkv(*shape)
    assert_matches_sdpa(q, k, v, {}, {})


@pytest.mark.parametrize("shape", SHAPES)
def test_causal_equals_sdpa_and_is_zero_above_the_diagonal(shape):
    lead, t_q, t_k, d_k, d_v = shape
    q, k, v = qkv(*shape, seed=1)
    # SDPA's is_causal aligns the mask to the top left; ours puts the queries last (a cache), so compare
    # with an explicit mask, which SDPA applies as given.
    allowed = ~causal_mask(t_q, t_k)
    weights = assert_matches_sdpa(q, k, v, {"causal": True}, {"attn_mask": allowed})
    if t_q == t_k:
        assert_matches_sdpa(q, k, v, {"causal": True}, {"is_causal": True})
        assert torch.equal(weights.triu(1), torch.zeros_like(weights))
    offset = t_k - t_q
    for i in range(t_q):
        assert (weights[..., i, offset + i + 1:] == 0).all()   # exactly zero in the future
        assert (weights[..., i, :offset + i + 1] > 0).all()    # and something everywhere else


@pytest.mark.parametrize("shape", SHAPES)
def test_boolean_mask_equals_sdpa(shape):
    lead, t_q, t_k, _, _ = shape
    q, k, v = qkv(*shape, seed=2)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(*lead, t_q, t_k, generator=g) > 0.4
    mask[..., 0] = True  # every query may see at least one key
    weights = assert_matches_sdpa(q, k, v, {"mask": mask}, {"attn_mask": mask})
    assert (weights[~mask] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_additive_float_mask_equals_sdpa(shape):
    lead, t_q, t_k, _, _ = shape
    q, k, v = qkv(*shape, seed=4)
    g = torch.Generator().manual_seed(5)
    bias = torch.randn(t_q, t_k, generator=g)  # broadcasts over batch and heads
    bias[:, 1:][torch.rand(t_q, t_k - 1, generator=g) > 0.5] = float("-inf")
    assert_matches_sdpa(q, k, v, {"mask": bias}, {"attn_mask": bias})


def test_broadcast_masks_and_padding_equal_sdpa():
    q, k, v = qkv((2, 3), 5, 5, 8, 8, seed=6)
    pad = padding_mask([3, 5], 5)[:, None]  # (batch, 1, 1, t_k)
    assert pad.shape == (2, 1, 1, 5)
    weights = assert_matches_sdpa(q, k, v, {"mask": pad}, {"attn_mask": pad})
    assert (weights[0, ..., 3:] == 0).all() and (weights[1] > 0).all()
    both = pad & ~causal_mask(5)
    assert_matches_sdpa(q, k, v, {"mask": pad, "causal": True}, {"attn_mask": both})


def test_padding_does_not_change_the_real_positions():
    q, k, v = qkv((), 5, 5, 4, 4, seed=7)
    alone, _ = attention(q[:3], k[:3], v[:3], causal=True)
    padded, weights = attention(q[None], k[None], v[None], mask=padding_mask([3], 5), causal=True)
    torch.testing.assert_close(padded[0, :3], alone)
    assert (weights[0, :, 3:] == 0).all()


def test_scale_argument_equals_sdpa():
    q, k, v = qkv((2,), 4, 6, 8, 3, seed=8)
    assert_matches_sdpa(q, k, v, {"scale": 1.0}, {"scale": 1.0})
    assert_matches_sdpa(q, k, v, {"scale": 0.1}, {"scale": 0.1})


def test_inline_formula():
    q, k, v = qkv((2,), 4, 6, 8, 3, seed=9, dtype=torch.float64)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    out, w = attention(q, k, v)
    torch.testing.assert_close(w, weights)
    torch.testing.assert_close(out, weights @ v)


@pytest.mark.parametrize("kwargs", [{}, {"causal": True}, {"mask": torch.tensor([[True, False, True, True]])},
                                    {"mask": torch.randn(3, 4, dtype=torch.float64)}])
def test_gradients_are_correct(kwargs):
    q, k, v = qkv((2,), 3, 4, 5, 2, seed=10, dtype=torch.float64)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, **kwargs)[0], (q, k, v))


def test_causal_mask_values():
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert causal_mask(2, 4).tolist() == [[False, False, False, True], [False, False, False, False]]
    assert causal_mask(1, 5).tolist() == [[False] * 5]


def test_padding_mask_values():
    assert padding_mask([1, 3], 3).tolist() == [[[True, False, False]], [[True, True, True]]]
    assert padding_mask(torch.tensor([2]), 4).dtype == torch.bool


@pytest.mark.parametrize("args,message", [
    ((torch.randn(4, 8), torch.randn(4, 6), torch.randn(4, 8)), r"share d_k .*q \(4, 8\), k \(4, 6\)"),
    ((torch.randn(4, 8), torch.randn(5, 8), torch.randn(4, 8)), r"same number of positions .*k \(5, 8\), v \(4, 8\)"),
    ((torch.randn(2, 4, 8), torch.randn(3, 4, 8), torch.randn(3, 4, 8)), r"leading .* q \(2, 4, 8\), k \(3, 4, 8\)"),
    ((torch.randn(8), torch.randn(4, 8), torch.randn(4, 8)), r"q must have at least 2 axes .*\(8,\)"),
    ((torch.ones(4, 8, dtype=torch.long), torch.randn(4, 8), torch.randn(4, 8)), r"q must be floating point; got torch.int64"),
    ((torch.randn(4, 8), torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8)), r"share one dtype"),
    (([[1.0]], torch.randn(1, 1), torch.randn(1, 1)), r"q must be a torch.Tensor; got list"),
])
def test_bad_inputs_name_the_shapes(args, message):
    with pytest.raises(ValueError, match=message):
        attention(*args)


@pytest.mark.parametrize("mask,message", [
    (torch.ones(4, 6, dtype=torch.bool), r"mask of shape \(4, 6\) does not broadcast to the scores' shape \(2, 6, 4\)"),
    (torch.ones(3, 6, 4, dtype=torch.bool), r"mask of shape \(3, 6, 4\) does not broadcast .*\(2, 6, 4\)"),
    (torch.ones(6, 4, dtype=torch.long), r"mask must be bool .*got torch.int64.*mask.bool\(\)"),
    (torch.zeros(6, 4, dtype=torch.float64), r"float mask must have the dtype of q, k and v \(torch.float32\)"),
    ([[True]], r"mask must be a torch.Tensor"),
    (torch.zeros(6, 4, dtype=torch.bool), r"query at index \(0, 0\) .* may attend to no key"),
])
def test_bad_masks_name_the_shapes(mask, message):
    q, k, v = qkv((2,), 6, 4, 8, 8)
    with pytest.raises(ValueError, match=message):
        attention(q, k, v, mask=mask)


def test_causal_with_more_queries_than_keys_is_refused():
    q, k, v = qkv((), 5, 3, 4, 4)
    with pytest.raises(ValueError, match="may attend to no key.*t_q <= t_k"):
        attention(q, k, v, causal=True)


@pytest.mark.parametrize("call,message", [
    (lambda: causal_mask(0), "t_q must be an int >= 1; got 0"),
    (lambda: causal_mask(3, 2.5), "t_k must be an int >= 1; got 2.5"),
    (lambda: padding_mask([2, 6], 5), r"between 1 and t_k=5; got \[2, 6\]"),
    (lambda: padding_mask([[2]], 5), r"1-D sequence of ints.*shape \(1, 1\)"),
    (lambda: padding_mask([2.0], 5), "1-D sequence of ints"),
    (lambda: padding_mask([2], 0), "t_k must be an int >= 1"),
])
def test_bad_mask_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_causal_mask_with_a_cache_is_bottom_right_aligned_unlike_sdpa_is_causal():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 2, 8, generator=g)                      # two new queries
    k, v = torch.randn(1, 2, 4, 8, generator=g), torch.randn(1, 2, 4, 8, generator=g)   # four keys
    ours, _ = attention(q, k, v, causal=True)
    bottom_right = F.scaled_dot_product_attention(q, k, v, attn_mask=~causal_mask(2, 4))
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, bottom_right)
    assert not torch.allclose(ours, top_left)
    # the last new query sits at the last position: it sees every key
    torch.testing.assert_close(ours[..., -1, :], F.scaled_dot_product_attention(q, k, v)[..., -1, :])
