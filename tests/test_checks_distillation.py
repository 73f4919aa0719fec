"""The unit 13 checks: they pass correct answers, fail the stub and name each classic mistake."""
import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import distillation as check


def loss(s, t, y, T, alpha, *, t2=True, reverse=False, soft_ce=False, swap_alpha=False, plain_teacher=False):
    log_q = F.log_softmax(s / T, -1)
    log_p = F.log_softmax(t / (1 if plain_teacher else T), -1)
    if reverse:
        log_p, log_q = log_q, log_p
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    ce = F.cross_entropy(s / T if soft_ce else s, y)
    a = 1 - alpha if swap_alpha else alpha
    return a * (T ** 2 if t2 else 1) * kl + (1 - a) * ce


def exponent(loss_fn):
    student, teacher, labels = check.gradient_example()
    norms = []
    for T in check.GRAD_TEMPERATURES:
        z = student.clone().requires_grad_(True)
        loss_fn(z, teacher, labels, T, 1.0).backward()
        norms.append(float(z.grad.norm()))
    return check.slope(check.GRAD_TEMPERATURES, norms)


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 13, 14):
        check.q1(loss, seed=seed)
    check.q2(exponent(loss), loss)
    check.q3(3.0)
    assert capsys.readouterr().out.count("✓") == 6


def test_the_t2_argument_holds():
    with_t2 = exponent(loss)
    without = exponent(lambda *a: loss(*a, t2=False))
    assert abs(with_t2) < 0.1 and without < -1.9


@pytest.mark.parametrize("kw,message", [
    ({"t2": False}, "forgot the T²"),
    ({"reverse": True}, "wrong way round"),
    ({"soft_ce": True}, "softened the student's logits in the cross-entropy"),
    ({"swap_alpha": True}, "swapped alpha"),
    ({"plain_teacher": True}, "forgot to soften the teacher"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *a: loss(*a, **kw))


def test_q2_q3_compare_with_their_own_run():
    with pytest.raises(CheckFailure, match="your `distillation_loss` from q1 is not right yet"):
        check.q2(exponent(loss), lambda *a: loss(*a, reverse=True))
    with pytest.raises(CheckFailure, match="WITHOUT the T²"):
        check.q2(exponent(lambda *a: loss(*a, t2=False)), loss)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q2(None, loss)
    with pytest.raises(CheckFailure, match="still has at least one half"):
        check.q3(2.0)
    with pytest.raises(CheckFailure, match="tolerance"):
        check.q3(4.0)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None)
