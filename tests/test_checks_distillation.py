"""The unit 13 checks: they pass correct answers and name each classic mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailure
from llmcourse.checks import distillation as check


def softened_softmax(z, T):
    return torch.softmax(z / T, -1)


def kl_divergence(p, q):
    return (p * (p.log() - q.log())).sum(-1).mean()


def distillation_loss(s, t, y, T, alpha):
    soft = kl_divergence(softened_softmax(t, T), softened_softmax(s, T))
    return alpha * T**2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def parameter_ratio(teacher, student):
    return sum(p.numel() for p in teacher.parameters()) / sum(p.numel() for p in student.parameters())


def test_correct_answers_pass(capsys):
    for seed in (0, 11, 12, 13, 14):
        check.q1(softened_softmax, seed=seed)
        check.q2(kl_divergence, seed=seed)
        check.q3(distillation_loss, seed=seed)
        check.q4(parameter_ratio, seed=seed)
    assert capsys.readouterr().out.count("✓") == 20


def _fails(question, func, match, seed=0):
    with pytest.raises(CheckFailure, match=match):
        getattr(check, question)(func, seed=seed)


@pytest.mark.parametrize("wrong,match", [
    (lambda z, T: torch.softmax(z * T, -1), "multiplied the logits by T"),
    (lambda z, T: torch.softmax(z, -1) / T, "divided the probabilities"),
    (lambda z, T: torch.softmax(z, -1), "ignored the temperature"),
    (lambda z, T: torch.softmax(z / T, 0), "wrong axis"),
])
def test_q1_mistakes(wrong, match):
    _fails("q1", wrong, match)


@pytest.mark.parametrize("wrong,match", [
    (lambda p, q: kl_divergence(q, p), r"KL\(student \|\| teacher\)"),
    (lambda p, q: (p * (p.log() - q.log())).sum(-1).sum(), "summed over the rows"),
    (lambda p, q: (p * (p.log() - q.log())).mean(), "every element"),
    (lambda p, q: (-(p * q.log()).sum(-1)).mean(), "cross-entropy"),
    (lambda p, q: -kl_divergence(p, q), "flipped the sign"),
    (lambda p, q: F.kl_div(q.log(), p, reduction="batchmean") + 0.1, "wrong"),
])
def test_q2_mistakes(wrong, match):
    _fails("q2", wrong, match)


def test_q2_torch_kl_div_with_student_log_probs_passes(capsys):
    check.q2(lambda p, q: F.kl_div(q.log(), p, reduction="batchmean"))
    assert "✓ q2" in capsys.readouterr().out


def _loss(soft_weight=lambda T: T**2, reverse=False, soft_ce=False, swap=False, soft_teacher=True):
    def f(s, t, y, T, alpha):
        pt = softened_softmax(t, T if soft_teacher else 1.0)
        ps = softened_softmax(s, T)
        soft = kl_divergence(ps, pt) if reverse else kl_divergence(pt, ps)
        hard = F.cross_entropy(s / T if soft_ce else s, y)
        a = 1 - alpha if swap else alpha
        return a * soft_weight(T) * soft + (1 - a) * hard
    return f


@pytest.mark.parametrize("wrong,match", [
    (_loss(soft_weight=lambda T: 1.0), "forgot the T²"),
    (_loss(soft_weight=lambda T: T), "by T instead of T²"),
    (_loss(reverse=True), "wrong way round"),
    (_loss(soft_ce=True), "cross-entropy too"),
    (_loss(swap=True), "swapped alpha"),
    (_loss(soft_teacher=False), "soften the teacher"),
])
def test_q3_mistakes(wrong, match):
    _fails("q3", wrong, match)


def test_q4_mistakes():
    _fails("q4", lambda t, s: parameter_ratio(s, t), "student / teacher")
    _fails("q4", lambda t, s: sum(v.numel() for v in t.state_dict().values())
           / sum(v.numel() for v in s.state_dict().values()), "twice")
    _fails("q4", lambda t, s: sum(p.numel() for p in t.parameters()) // sum(p.numel() for p in s.parameters()),
           "integer division")
    _fails("q4", lambda t, s: "big", "float")


def test_stubs_fail_with_not_implemented():
    def stub(*args):
        raise NotImplementedError("write it")
    for q in ("q1", "q2", "q3", "q4"):
        with pytest.raises(CheckFailure, match="not implemented"):
            getattr(check, q)(stub)
