"""The unit 08 checks: they pass correct answers and name each classic mistake."""
import math

import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import training as check
from llmcourse.optim import adam_step as library_adam_step
from llmcourse.train import lr_at


def adam(p, g, m, v, t, lr, b1, b2, eps, *, correct=True, sqrt=True, swap=False, sign=1.0):
    if swap:
        b1, b2 = b2, b1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if correct else (m, v)
    return p - sign * lr * mh / ((vh.sqrt() if sqrt else vh) + eps), m, v


def schedule(s, max_lr, min_lr, warmup, decay, *, warm0=False, to_zero=False, linear=False, progress_from_0=False):
    if s < warmup:
        return max_lr * (s if warm0 else s + 1) / warmup
    if s >= decay:
        return min_lr
    p = s / decay if progress_from_0 else (s - warmup) / (decay - warmup)
    if linear:
        return max_lr - p * (max_lr - min_lr)
    lo = 0.0 if to_zero else min_lr
    return lo + 0.5 * (1 + math.cos(math.pi * p)) * (max_lr - lo)


def state(r, c, b):
    return 2 * r * c * b, (r + c) * b


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(adam, seed=seed)
        check.q2(schedule, seed=seed)
        check.q3(lambda beta: 1 / (1 - beta), seed=seed)
        check.q4(state, seed=seed)
    check.q1(lambda p, g, m, v, t, lr, b1, b2, eps: library_adam_step(p, g, m, v, t, lr=lr, beta1=b1, beta2=b2, eps=eps))
    check.q2(lambda s, a, b, w, d: lr_at(s, max_lr=a, min_lr=b, warmup_steps=w, decay_steps=d))
    check.q4(lambda r, c, b: [float(2 * r * c * b), (r + c) * b])  # a list and integral floats are fine
    assert capsys.readouterr().out.count("✓") == 19


@pytest.mark.parametrize("func,message", [
    (lambda *a: adam(*a, correct=False), "no bias correction"),
    (lambda *a: adam(*a, swap=True), "β1 and β2 swapped"),
    (lambda *a: adam(*a, sqrt=False), "square root is missing"),
    (lambda *a: adam(*a, sign=-1.0), "goes uphill"),
    (lambda p, g, m, v, t, lr, b1, b2, eps: (adam(p, g, m, v, t, lr, b1, b2, eps)[0], m, v), "m after step 1"),
    (lambda p, g, m, v, t, lr, b1, b2, eps: adam(p, g, m, v, t, lr, b1, b2, eps)[0], "should return a tuple"),
    (lambda p, g, m, v, t, lr, b1, b2, eps: adam(p, g.abs().sqrt(), m, v, t, lr, b1, b2, eps), "m after step 1"),
    (lambda *a: adam(*a[:5], 0.011, *a[6:]), "parameters after 6 Adam steps is wrong"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


def test_q1_v_of_the_gradient_not_its_square():
    def bad(p, g, m, v, t, lr, b1, b2, eps):
        out = adam(p, g, m, v, t, lr, b1, b2, eps)
        return out[0], out[1], b2 * v + (1 - b2) * g
    with pytest.raises(CheckFailure, match="not its square"):
        check.q1(bad)


@pytest.mark.parametrize("kw,message", [
    ({"warm0": True}, "warm-up starts at 0"),
    ({"to_zero": True}, "ignores min_lr"),
    ({"progress_from_0": True}, "progress is step / decay_steps"),
    ({"linear": True}, "linear decay"),
])
def test_q2_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a: schedule(*a, **kw))


def test_q2_no_warmup_and_unknown_error():
    with pytest.raises(CheckFailure, match="no warm-up"):
        check.q2(lambda s, a, b, w, d: a if s < w else schedule(s, a, b, w, d))
    with pytest.raises(CheckFailure, match="is wrong"):
        check.q2(lambda *a: schedule(*a) * 1.01)


@pytest.mark.parametrize("func,message", [
    (lambda b: 1 - b, "weight of the newest value"),
    (lambda b: 1 / b, "1 / beta"),
    (lambda b: b / (1 - b), "mean AGE"),
    (lambda b: 2 / (1 - b), "should be"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


@pytest.mark.parametrize("func,message", [
    (lambda r, c, b: (r * c * b, (r + c) * b), "TWO moments"),
    (lambda r, c, b: (16 * r * c * b, (r + c) * b), "bits, not bytes"),
    (lambda r, c, b: (2 * r * c, (r + c) * b), "numbers, not bytes"),
    (lambda r, c, b: (2 * r * c * b, r * c * b), "stored in full"),
    (lambda r, c, b: (2 * r * c * b, 2 * r * c * b), "is Adam"),
    (lambda r, c, b: (2 * r * c * b, (r + c) * b * 8), "bits, not bytes"),
    (lambda r, c, b: (2 * r * c * b, r + c), "numbers, not bytes"),
    (lambda r, c, b: (2 * r * c * b, (r + c) * b + r * c * b), "no first moment"),
    (lambda r, c, b: 2 * r * c * b, "should return a pair"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


def test_stub_fails_with_not_implemented():
    def stub(*args):
        raise NotImplementedError
    for q in (check.q1, check.q2, check.q3, check.q4):
        with pytest.raises(CheckFailure, match="not implemented"):
            q(stub)
