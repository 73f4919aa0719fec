"""The unit 06 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import transformer as check


def block_fn(x, block):
    x = x + block.attn(block.ln1(x), causal=True)[0]
    return x + block.mlp(block.ln2(x))


def loss_fn(logits, idx):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))


@torch.no_grad()
def forward_loss(model, idx, residual=True):
    h = model.tok_emb(idx) + model.pos_emb(torch.arange(idx.shape[1]))
    for block in model.blocks:
        if residual:
            h = block_fn(h, block)
        else:
            h = block.mlp(block.ln2(block.attn(block.ln1(h), causal=True)[0]))
    return loss_fn(model.lm_head(model.ln_f(h)), idx).item()


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(block_fn, seed=seed)
        check.q2(loss_fn, seed=seed)
        check.q2(lambda lg, i: loss_fn(lg, i).item(), seed=seed)  # a float is fine too
    check.q1(lambda x, block: block(x)[0])  # the library's own Block is a correct answer
    model, idx = check.experiment_data()
    check.q3(forward_loss(model, idx), forward_loss(model, idx, residual=False), block_fn, loss_fn)
    with torch.no_grad():
        own = model(idx[:, :-1], idx[:, 1:])[1].item()  # the model's own loss on the same predictions
    check.q3(own, forward_loss(model, idx, residual=False), block_fn, loss_fn)
    check.q4("worse than guessing uniformly")
    assert capsys.readouterr().out.count("✓") == 3 * 4 + 1 + 3


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
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


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
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@torch.no_grad()
def test_q3_names_the_mistake():
    run = check.residual_run()
    cases = [
        ((None, run["without"]), "not answered yet"),
        ((run["no positions"], run["without"]), "position embeddings are missing"),
        ((run["no final norm"], run["without"]), "final LayerNorm"),
        ((run["with"], run["mlp only"]), "only the attention's residual"),
        ((run["with"], run["attention only"]), "only the MLP's residual"),
        ((run["with"], run["with"]), "that is the loss WITH"),
        ((run["with"] + 0.01, run["without"]), r"own run .*±0.001"),
    ]
    for answers, message in cases:
        with pytest.raises(CheckFailure, match=message):
            check.q3(*answers, block_fn, loss_fn)
    with pytest.raises(CheckFailure, match="(?s)^q3: this fails because your `transformer_block` from q1.*post-norm"):
        check.q3(run["with"], run["without"], post_norm, loss_fn)
    with pytest.raises(CheckFailure, match="^q3: this fails because your `lm_loss` from q2"):
        check.q3(run["with"], run["without"], block_fn, lambda lg, idx: flat(lg, idx))


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"),
                                            (check.RESIDUAL_READINGS[1], "the uniform guess costs"),
                                            (check.RESIDUAL_READINGS[2], "the uniform guess costs"),
                                            ("worse", "should be one of")])
def test_q4_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(answer)
