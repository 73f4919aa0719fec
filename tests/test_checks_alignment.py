"""The unit 14 checks: they pass correct answers, fail the stub and name each classic mistake."""
import pytest
import torch
import torch.nn.functional as F

from llmcourse import alignment as al
from llmcourse.checks import CheckFailure
from llmcourse.checks import alignment as check


def seq_logprob(logits, targets, mask, *, mean=False, all_tokens=False):
    lp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = torch.ones_like(mask) if all_tokens else mask
    return (lp * m).sum(-1) / (m.sum(-1) if mean else 1)


def dpo(policy_logits, ref_logits, targets, mask, beta, *, swap=False, halves=False, no_ref=False, no_beta=False,
        total=False):
    pi, ref = seq_logprob(policy_logits, targets, mask), seq_logprob(ref_logits, targets, mask)
    if halves:
        h = len(pi) // 2
        w, l = slice(0, h), slice(h, None)
    else:
        w, l = slice(0, None, 2), slice(1, None, 2)
    if swap:
        w, l = l, w
    if no_ref:
        ref = torch.zeros_like(ref)
    margin = (1 if no_beta else beta) * ((pi[w] - ref[w]) - (pi[l] - ref[l]))
    losses = -F.logsigmoid(margin)
    return losses.sum() if total else losses.mean()


def toy_run(loss_fn, beta):
    ref_table, targets, mask = check.toy_preferences()
    rows = targets.shape[0]
    policy = ref_table.clone().requires_grad_(True)
    opt = torch.optim.SGD([policy], lr=check.LR)
    for _ in range(check.STEPS):
        loss = loss_fn(policy.expand(rows, -1, -1), ref_table.expand(rows, -1, -1), targets, mask, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        change = seq_logprob(policy.expand(rows, -1, -1), targets, mask) - seq_logprob(ref_table.expand(rows, -1, -1),
                                                                                         targets, mask)
    return float(change[0::2].mean()), float(change[1::2].mean())


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 12, 13):
        check.q1(seq_logprob, seed=seed)
        check.q2(dpo, seq_logprob, seed=seed)
    check.q1(al.sequence_logprob)
    chosen, rejected = toy_run(dpo, check.BETA)
    check.q3(chosen, rejected, dpo, seq_logprob)
    check.q4(0.5)
    assert capsys.readouterr().out.count("✓") == 11


def test_toy_run_is_independent_of_the_checks_own():
    assert toy_run(dpo, 0.5) == pytest.approx(check.train_toy(0.5), abs=1e-9)
    chosen, rejected = check.train_toy(check.BETA)
    assert rejected < chosen < 0          # the finding the exercise asks about


@pytest.mark.parametrize("kw,message", [
    ({"mean": True}, "SUM"),
    ({"all_tokens": True}, "prompt included"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *a: seq_logprob(*a, **kw))


@pytest.mark.parametrize("kw,message", [
    ({"swap": True}, "swapped"),
    ({"halves": True}, "first half"),
    ({"no_ref": True}, "reference model is missing"),
    ({"no_beta": True}, "beta is missing"),
    ({"total": True}, "mean over pairs"),
])
def test_q2_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a: dpo(*a, **kw), seq_logprob)


def test_q2_blames_sequence_logprob_from_q1():
    with pytest.raises(CheckFailure, match="your `sequence_logprob` from q1 is not right yet"):
        check.q2(dpo, lambda *a: seq_logprob(*a, mean=True))


def test_q3_q4_compare_with_their_own_run():
    chosen, rejected = check.train_toy(check.BETA)
    with pytest.raises(CheckFailure, match="your `dpo_loss` from q2 is not right yet"):
        check.q3(chosen, rejected, lambda *a: dpo(*a, swap=True), seq_logprob)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None, None, dpo, seq_logprob)
    with pytest.raises(CheckFailure, match="rejected answers' change"):
        check.q3(rejected, chosen, dpo, seq_logprob)
    with pytest.raises(CheckFailure, match="sign is flipped"):
        check.q3(chosen, -rejected, dpo, seq_logprob)
    with pytest.raises(CheckFailure, match="largest such beta"):
        check.q4(2.0)
    with pytest.raises(CheckFailure, match="still GAIN"):
        check.q4(0.3)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None)
