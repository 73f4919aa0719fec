"""The unit 14 checks: they pass correct answers and name each classic mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import alignment as check


def _logp(logits, targets):
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def sft_loss(logits, targets, mask):
    return F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(~mask, -100).flatten(), ignore_index=-100)


def sequence_logprob(logits, targets, mask):
    return (_logp(logits, targets) * mask).sum(-1)


def dpo_loss(pw, pl, rw, rl, beta):
    return -torch.log(torch.sigmoid(beta * ((pw - rw) - (pl - rl)))).mean()


def reward_accuracy(pw, pl, rw, rl, beta):
    return float((beta * (pw - rw) > beta * (pl - rl)).double().mean())


def test_correct_answers_pass(capsys):
    for seed in (0, 11, 12, 13, 14):
        check.q1(sft_loss, seed=seed)
        check.q2(sequence_logprob, seed=seed)
        check.q3(dpo_loss, seed=seed)
        check.q4(reward_accuracy, seed=seed)
    assert capsys.readouterr().out.count("✓") == 20


@pytest.mark.parametrize("wrong, message", [
    (lambda l, t, m: -_logp(l, t).mean(), "prompt included"),
    (lambda l, t, m: -(_logp(l, t) * m).sum(), "without dividing"),
    (lambda l, t, m: -(_logp(l, t) * m).sum() / m.numel(), "divided by all the tokens"),
    (lambda l, t, m: -(_logp(l, t) * ~m).sum() / (~m).sum(), "mask is inverted"),
    (lambda l, t, m: (_logp(l, t) * m).sum() / m.sum(), "sign is flipped"),
])
def test_q1_names_mistakes(wrong, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda l, t, m: (_logp(l, t) * m).sum(-1) / m.sum(-1), "SUM"),
    (lambda l, t, m: _logp(l, t).sum(-1), "prompt included"),
    (lambda l, t, m: (_logp(l, t) * m).sum(), "whole batch"),
    (lambda l, t, m: (_logp(l, t).exp() * m).sum(-1), "probabilities instead"),
    (lambda l, t, m: (l.gather(-1, t.unsqueeze(-1)).squeeze(-1) * m).sum(-1), "without log_softmax"),
])
def test_q2_names_mistakes(wrong, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda pw, pl, rw, rl, b: dpo_loss(pl, pw, rl, rw, b), "swapped"),
    (lambda pw, pl, rw, rl, b: -F.logsigmoid(b * (pw - pl)).mean(), "reference model is missing"),
    (lambda pw, pl, rw, rl, b: -F.logsigmoid((pw - rw) - (pl - rl)).mean(), "beta is missing"),
    (lambda pw, pl, rw, rl, b: F.logsigmoid(b * ((pw - rw) - (pl - rl))).mean(), "minus sign"),
    (lambda pw, pl, rw, rl, b: -F.logsigmoid(((pw - rw) - (pl - rl)) / b).mean(), "divided by beta"),
])
def test_q3_names_mistakes(wrong, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda pw, pl, rw, rl, b: float((pw > pl).double().mean()), "subtracts the reference"),
    (lambda pw, pl, rw, rl, b: float((b * (pl - rl) > b * (pw - rw)).double().mean()), "swapped"),
    (lambda pw, pl, rw, rl, b: float((b * (pw - rw) >= b * (pl - rl)).double().mean()), "ties"),
    (lambda pw, pl, rw, rl, b: float((b * (pw - rw) > b * (pl - rl)).sum()), "number of wins"),
    (lambda pw, pl, rw, rl, b: [0.5], "Python float"),
])
def test_q4_names_mistakes(wrong, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(wrong)


def test_a_crash_or_stub_fails_clearly():
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(CheckFailure, match="q3: .*not implemented"):
        check.q3(stub)
