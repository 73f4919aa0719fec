"""The unit 06 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import transformer as check


def embed(idx, tok, pos):
    return tok[idx] + pos[: idx.shape[1]]


def block_fn(x, block):
    x = x + block.attn(block.ln1(x), causal=True)[0]
    return x + block.mlp(block.ln2(x))


def loss_fn(logits, idx):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))


@torch.no_grad()
def greedy(model, idx, n):
    T = model.config.context_length
    for _ in range(n):
        idx = torch.cat([idx, model(idx[:, -T:])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(embed, seed=seed)
        check.q2(block_fn, seed=seed)
        check.q3(loss_fn, seed=seed)
        check.q3(lambda lg, i: loss_fn(lg, i).item(), seed=seed)  # a float is fine too
        check.q4(greedy, seed=seed)
    # the library's own Block and GPT.extend are correct answers
    check.q2(lambda x, block: block(x)[0])
    check.q4(lambda model, idx, n: model.extend(idx, n, temperature=0))
    assert capsys.readouterr().out.count("✓") == 22


@pytest.mark.parametrize("func,message", [
    (lambda idx, tok, pos: tok[idx], "position embeddings are missing"),
    (lambda idx, tok, pos: tok[idx] + pos[idx], "indexed with the token ids"),
    (lambda idx, tok, pos: tok[idx] + pos[1: idx.shape[1] + 1], "counted from 1"),
    (lambda idx, tok, pos: pos[: idx.shape[1]].expand(idx.shape[0], -1, -1), "only the position embeddings"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


def post_norm(x, b):
    x = b.ln1(x + b.attn(x, causal=True)[0])
    return b.ln2(x + b.mlp(x))


def not_causal(x, b):
    x = x + b.attn(b.ln1(x), causal=False)[0]
    return x + b.mlp(b.ln2(x))


def parallel(x, b):
    return x + b.attn(b.ln1(x), causal=True)[0] + b.mlp(b.ln2(x))


def one_norm(x, b):
    x = x + b.attn(b.ln1(x), causal=True)[0]
    return x + b.mlp(b.ln1(x))


def no_mlp_residual(x, b):
    x = x + b.attn(b.ln1(x), causal=True)[0]
    return b.mlp(b.ln2(x))


@pytest.mark.parametrize("func,message", [
    (post_norm, "post-norm"),
    (lambda x, b: b.mlp(b.ln2(b.attn(b.ln1(x), causal=True)[0])), "no residual connections"),
    (not_causal, "without the causal mask"),
    (parallel, "the MLP reads the block's input"),
    (one_norm, "ln1 used twice"),
    (no_mlp_residual, "the MLP step has no residual"),
    (lambda x, b: x[:, :, :2], r"shape \(2, 6, 2\), expected \(2, 6, 8\)"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


def flat(lg, tg):
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1))


@pytest.mark.parametrize("func,message", [
    (lambda lg, i: flat(lg, i), "targets are not shifted"),
    (lambda lg, i: flat(lg[:, 1:], i[:, :-1]), "shifted the wrong way"),
    (lambda lg, i: loss_fn(lg, i) / math.log(2), "in bits"),
    (lambda lg, i: F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), i[:, 1:].reshape(-1), reduction="sum"),
     "summed instead of averaged"),
    (lambda lg, i: F.cross_entropy(lg[:, :-1].transpose(1, 2), i[:, 1:], reduction="none").mean(1),
     "should be one number"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


@torch.no_grad()
def first_position(model, idx, n):
    T = model.config.context_length
    for _ in range(n):
        idx = torch.cat([idx, model(idx[:, -T:])[0][:, 0].argmax(-1, keepdim=True)], dim=1)
    return idx


@torch.no_grad()
def crop_front(model, idx, n):
    T = model.config.context_length
    for _ in range(n):
        idx = torch.cat([idx, model(idx[:, :T])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@torch.no_grad()
def no_crop(model, idx, n):
    for _ in range(n):
        idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("func,message", [
    (first_position, "FIRST position's scores"),
    (crop_front, "cropped to the FIRST context_length tokens"),
    (no_crop, "raised ValueError: .*crop idx to its last 8 tokens"),
    (lambda model, idx, n: greedy(model, idx, n)[:, idx.shape[1]:], "the prompt is missing"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


def test_stubs_fail_with_not_implemented():
    def stub(*args):
        raise NotImplementedError("write it")
    for q in (check.q1, check.q2, check.q3, check.q4):
        with pytest.raises(CheckFailure, match="not implemented yet"):
            q(stub)
