"""The unit 08 checks: they pass correct answers, fail the stub and name each classic mistake."""
import math

import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import training as check
from llmcourse.optim import adam_step as library_adam_step
from llmcourse.train import lr_at


def adam(p, g, m, v, t, lr, b1, b2, eps, *, correct=True, sqrt=True, swap=False, sign=1.0, eps_inside=False,
         shift=0, hat_state=False):
    if swap:
        b1, b2 = b2, b1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mh, vh = (m / (1 - b1 ** (t + shift)), v / (1 - b2 ** (t + shift))) if correct else (m, v)
    denominator = (vh + eps).sqrt() if eps_inside else (vh.sqrt() if sqrt else vh) + eps
    p = p - sign * lr * mh / denominator
    return (p, mh, vh) if hat_state else (p, m, v)


def schedule(s, max_lr, min_lr, warmup, decay, *, warm0=False, to_zero=False, linear=False, progress_from_0=False,
             warm_le=False):
    if s < warmup or (warm_le and s == warmup):
        return max_lr * (s if warm0 else s + 1) / warmup
    if s >= decay:
        return min_lr
    p = s / decay if progress_from_0 else (s - warmup) / (decay - warmup)
    if linear:
        return max_lr - p * (max_lr - min_lr)
    lo = 0.0 if to_zero else min_lr
    return lo + 0.5 * (1 + math.cos(math.pi * p)) * (max_lr - lo)


def sweep(adam_step):
    finals = {}
    for lr in check.LEARNING_RATES:
        w = torch.zeros(10, dtype=torch.float64)
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for t in range(1, check.STEPS + 1):
            w, m, v = adam_step(w, check.quadratic_grad(w), m, v, t, lr, *check.BETAS, check.EPS)
        finals[lr] = check.quadratic_loss(w)
    best = min(finals, key=finals.get)
    return best, finals[best], finals


def first_close():
    t = 1
    while abs((1 - 0.9 ** t) / math.sqrt(1 - 0.999 ** t) - 1) > 0.1:
        t += 1
    return t


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(adam, seed=seed)
        check.q2(schedule, seed=seed)
    check.q1(lambda p, g, m, v, t, lr, b1, b2, eps: library_adam_step(p, g, m, v, t, lr=lr, beta1=b1, beta2=b2, eps=eps))
    check.q2(lambda s, a, b, w, d: lr_at(s, max_lr=a, min_lr=b, warmup_steps=w, decay_steps=d))
    best, loss, _ = sweep(adam)
    check.q3(best, loss, adam)
    check.q4(0.1 / math.sqrt(0.001), first_close())
    assert capsys.readouterr().out.count("✓") == 12


def test_the_sweep_is_the_torch_optimizer_sweep():
    """The check's own experiment agrees with torch.optim.Adam on the same problem."""
    finals = check.sweep_final_losses()
    for lr in (0.01, 0.3):
        w = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
        opt = torch.optim.Adam([w], lr=lr, betas=check.BETAS, eps=check.EPS)
        for _ in range(check.STEPS):
            w.grad = check.quadratic_grad(w.detach())
            opt.step()
        assert math.isclose(check.quadratic_loss(w.detach()), finals[lr], rel_tol=1e-9)


@pytest.mark.parametrize("kw,message", [
    ({"correct": False}, "no bias correction"),
    ({"swap": True}, "β1 and β2 swapped"),
    ({"sqrt": False}, "square root is missing"),
    ({"sign": -1.0}, "goes uphill"),
    ({"eps_inside": True}, "eps inside the square root"),
    ({"hat_state": True}, "bias-corrected m̂"),
    ({"shift": 1}, "uses step \\+ 1"),
    ({"shift": -1}, "step count off by one"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *a: adam(*a, **kw))


def test_q1_hat_state_for_v_only_and_other_errors():
    def v_hat_only(p, g, m, v, t, lr, b1, b2, eps):
        new_p, new_m, _ = adam(p, g, m, v, t, lr, b1, b2, eps)
        return new_p, new_m, adam(p, g, m, v, t, lr, b1, b2, eps, hat_state=True)[2]
    with pytest.raises(CheckFailure, match="bias-corrected v̂"):
        check.q1(v_hat_only)

    def v_of_gradient(p, g, m, v, t, lr, b1, b2, eps):
        out = adam(p, g, m, v, t, lr, b1, b2, eps)
        return out[0], out[1], b2 * v + (1 - b2) * g
    with pytest.raises(CheckFailure, match="not its square"):
        check.q1(v_of_gradient)
    with pytest.raises(CheckFailure, match="should return a tuple"):
        check.q1(lambda *a: adam(*a)[0])
    with pytest.raises(CheckFailure, match="parameters after 6 Adam steps is wrong"):
        check.q1(lambda *a: adam(*a[:5], 0.011, *a[6:]))


@pytest.mark.parametrize("kw,message", [
    ({"warm0": True}, "warm-up uses step / warmup_steps"),
    ({"warm_le": True}, "runs one step too long"),
    ({"to_zero": True}, "ignores min_lr"),
    ({"progress_from_0": True}, "progress is step / decay_steps"),
    ({"linear": True}, "linear decay"),
])
def test_q2_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a: schedule(*a, **kw))


def test_q2_shifted_curves_no_warmup_and_unknown_error():
    with pytest.raises(CheckFailure, match="one step late"):
        check.q2(lambda s, a, b, w, d: 0.0 if s == 0 else schedule(s - 1, a, b, w, d))
    with pytest.raises(CheckFailure, match="one step early"):
        check.q2(lambda s, a, b, w, d: schedule(s + 1, a, b, w, d))
    with pytest.raises(CheckFailure, match="no warm-up"):
        check.q2(lambda s, a, b, w, d: a if s < w else schedule(s, a, b, w, d))
    with pytest.raises(CheckFailure, match="is wrong"):
        check.q2(lambda *a: schedule(*a) * 1.01)


def test_q3_blames_adam_from_q1_and_checks_the_measurement():
    best, loss, finals = sweep(adam)
    wrong_adam = lambda *a: adam(*a, correct=False)  # noqa: E731
    with pytest.raises(CheckFailure, match="your `adam_step` from q1 is not right yet"):
        check.q3(best, loss, wrong_adam)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None, None, adam)
    worst = max(finals, key=finals.get)
    with pytest.raises(CheckFailure, match="HIGHEST final loss"):
        check.q3(worst, finals[worst], adam)
    with pytest.raises(CheckFailure, match="not one of LEARNING_RATES"):
        check.q3(0.5, loss, adam)
    with pytest.raises(CheckFailure, match="loss before any step"):
        check.q3(best, check.quadratic_loss(torch.zeros(10, dtype=torch.float64)), adam)
    with pytest.raises(CheckFailure, match="tolerance"):
        check.q3(best, loss * 1.5, adam)


def test_q4_names_the_mistake():
    ratio, t = 0.1 / math.sqrt(0.001), first_close()
    for wrong, message in [(1 / ratio, "inverse ratio"), (100.0, "square root is missing"), (5.0, "tolerance")]:
        with pytest.raises(CheckFailure, match=message):
            check.q4(wrong, t)
    for wrong, message in [(t + 1, "one step late"), (t - 1, "one step early"), (None, "not answered yet")]:
        with pytest.raises(CheckFailure, match=message):
            check.q4(ratio, wrong)


def test_stub_fails_with_not_implemented():
    def stub(*args):
        raise NotImplementedError
    for q in (check.q1, check.q2):
        with pytest.raises(CheckFailure, match="not implemented"):
            q(stub)
    with pytest.raises(CheckFailure, match="not implemented"):
        check.q3(None, None, stub)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None, None)


def test_q3_accepts_the_rate_as_a_tensor_or_rounded_float():
    best, loss, _ = sweep(adam)
    check.q3(torch.tensor(best), loss, adam)
    check.q3(best * (1 + 1e-12), loss, adam)
    with pytest.raises(CheckFailure, match="not one of LEARNING_RATES"):
        check.q3("0.3", loss, adam)
