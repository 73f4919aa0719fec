"""Checks for exercises/08_training.ipynb: Adam's step, the learning-rate schedule, a learning-rate
sweep with your own Adam, and what bias correction does to the first steps.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds) and compares with a trusted reference: `torch.optim.Adam` for the Adam step, the
library's `train.lr_at` (the schedule every training run of the course uses). Experiment answers
are compared with the check's own run of the same experiment. Messages name the classic mistakes:
no bias correction, β1 and β2 swapped, the square root missing, ε inside the square root, the
bias-corrected m̂/v̂ returned as the state, a step count off by one, a warm-up that starts at 0 or
runs one step too long, a decay that ignores min_lr.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checks.core import answered, call, compare, fail, hint_giver, measured, on_grid, passed, requires
from llmcourse.train import lr_at

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("Adam keeps two running averages: one of the gradient, one of its square. Both start at 0, "
           "which biases them towards 0 in the first steps; 'bias correction' undoes that before the update.",
           "The averages you return are the raw ones (they are fed back in at the next step); the corrected "
           "ones are divided by 1 - beta**step and used only for this step's update. The step divides by the "
           "square root of the corrected second moment, with eps added after the root.",
           "Shape of the code: update m with beta1, v with beta2 (v averages grad squared); make the two "
           "corrected copies; new param = param - lr * (corrected m) / (root of corrected v + eps); "
           "return new param, m, v (not the corrected ones)."),
    "q2": ("Three phases: a straight line up, half a cosine down, then flat. Find which phase `step` is in first.",
           "Steps count from 0, and step 0 must already move, so the warm-up reaches max_lr exactly at step "
           "warmup_steps - 1. The cosine's progress is 0 at warmup_steps and 1 at decay_steps.",
           "if step < warmup_steps: a fraction (step + 1) / warmup_steps of max_lr; if step >= decay_steps: "
           "the floor; else progress p = (step - warmup_steps) / (decay_steps - warmup_steps) and "
           "min_lr + (1 + cos(pi p)) / 2 * (max_lr - min_lr)."),
    "q3": ("Run the same optimisation once per learning rate in LEARNING_RATES and compare where each ends.",
           "Start every run from the same zeros, with fresh m and v of zeros; each step asks `quadratic_grad` "
           "for the gradient and calls your adam_step with step = 1, 2, ..., STEPS.",
           "for lr in LEARNING_RATES: reset w, m, v; for step in 1..STEPS: w, m, v = adam_step(w, "
           "quadratic_grad(w), m, v, step, lr, ...); record quadratic_loss(w); then pick the lr with the "
           "smallest final loss, and that loss."),
    "q4": ("Write the uncorrected step m / sqrt(v) using the raw averages given in the question, and divide "
           "it by the corrected step, which is 1: the gradient g cancels out.",
           "The corrected step has size lr (m̂ / sqrt(v̂) = 1). Without the correction the step is "
           "(1 - beta1**t) / sqrt(1 - beta2**t) times that: far from 1 at first.",
           "Loop t = 1, 2, ... and stop at the first t where abs(ratio(t) - 1) <= 0.1."),
}
hint = hint_giver(HINTS)



# --------------------------------------------------------------------------- q1: Adam


def _adam_run(start, grads, lr, beta1, beta2, eps, *, correct=True, sqrt=True, eps_inside=False, step_shift=0):
    """A reference Adam trajectory (or a classic mistake of it) from `start` over `grads`."""
    p, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        s = t + step_shift
        m_hat, v_hat = (m / (1 - beta1 ** s), v / (1 - beta2 ** s)) if correct else (m, v)
        if eps_inside:
            p = p - lr * m_hat / (v_hat + eps).sqrt()
        else:
            p = p - lr * m_hat / ((v_hat.sqrt() if sqrt else v_hat) + eps)
    return p


def _torch_adam(start, grads, lr, beta1, beta2, eps):
    """PyTorch's Adam on the same gradients: the trusted reference."""
    p_ref = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([p_ref], lr=lr, betas=(beta1, beta2), eps=eps)
    for grad in grads:
        p_ref.grad = grad.clone()
        opt.step()
    return p_ref.detach()


def q1(adam_step, seed: int = 0) -> None:
    """adam_step(param, grad, m, v, step, lr, beta1, beta2, eps) -> (param, m, v), as torch.optim.Adam.

    eps is 1e-3 here (not the usual 1e-8) and the gradients are small, so that where ε goes matters.
    """
    g = torch.Generator().manual_seed(seed)
    lr, beta1, beta2, eps = 0.01, 0.8, 0.95, 1e-3
    start = torch.randn(4, 3, generator=g, dtype=torch.float64)
    grads = [torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.03 for _ in range(6)]
    p, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, grad in enumerate(grads, start=1):
        out = call("q1", adam_step, p.clone(), grad.clone(), m.clone(), v.clone(), t, lr, beta1, beta2, eps)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            fail("q1", f"adam_step should return a tuple (param, m, v); got {type(out).__name__}",
                 "return the new parameter and both updated moments")
        p, m, v = out
        if t == 1:
            compare("q1", m, (1 - beta1) * grad, name="m after step 1", mistakes=[
                ("you returned the bias-corrected m̂ = m / (1 - beta1**step) as the state; return the raw m "
                 "(the next step builds on it) and use m̂ only inside this step's update", grad),
                ("β1 and β2 swapped: m must use beta1", (1 - beta2) * grad),
            ], hint="m is the running average of the gradient, starting from the m you were given")
            compare("q1", v, (1 - beta2) * grad ** 2, name="v after step 1", mistakes=[
                ("you returned the bias-corrected v̂ = v / (1 - beta2**step) as the state; return the raw v "
                 "(the next step builds on it) and use v̂ only inside this step's update", grad ** 2),
                ("β1 and β2 swapped: v must use beta2", (1 - beta1) * grad ** 2),
                ("v averages the gradient, not its square", (1 - beta2) * grad),
            ], hint="v is the running average of the squared gradient, starting from the v you were given")
            if not (isinstance(p, torch.Tensor) and torch.isfinite(p).all()):
                fail("q1", "the parameters after step 1 are not finite (inf or NaN).",
                     "is your step count off by one? `step` counts from 1, so the first bias correction "
                     "divides by 1 - beta**1; with step - 1 it divides by 1 - beta**0 = 0")
    expected = _torch_adam(start, grads, lr, beta1, beta2, eps)
    run = lambda **kw: _adam_run(start, grads, lr, beta1, beta2, eps, **kw)  # noqa: E731
    compare("q1", p, expected, name="the parameters after 6 Adam steps", rtol=1e-6, atol=1e-9, mistakes=[
        ("no bias correction: m and v start at 0, so divide them by (1 - beta1**step) and (1 - beta2**step)",
         run(correct=False)),
        ("β1 and β2 swapped (m must use beta1, v must use beta2)",
         _adam_run(start, grads, lr, beta2, beta1, eps)),
        ("the square root is missing: divide by the square root of v̂, plus eps", run(sqrt=False)),
        ("eps inside the square root, sqrt(v̂ + eps): eps is added after the root, sqrt(v̂) + eps "
         "(as torch.optim.Adam and the paper do)", run(eps_inside=True)),
        ("the bias correction uses step + 1: your step count is one ahead; `step` already counts from 1",
         run(step_shift=1)),
        ("the step goes uphill: subtract the update, do not add it", 2 * start - expected),
    ], hint="compare your update line by line with the formula above the question")
    passed("q1", "six Adam steps land exactly where torch.optim.Adam does, with the same m and v")


# --------------------------------------------------------------------------- q2: the schedule


def q2(lr_schedule, seed: int = 0) -> None:
    """lr_schedule(step, max_lr, min_lr, warmup_steps, decay_steps): warm-up then cosine, as train.lr_at."""
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    for _ in range(3):
        warmup = r(2, 10)
        decay = warmup + r(5, 30)
        max_lr = r(1, 9) * 1e-3
        min_lr = max_lr * r(1, 5) / 10
        steps = range(decay + 5)
        got = torch.tensor([float(call("q2", lr_schedule, s, max_lr, min_lr, warmup, decay)) for s in steps],
                           dtype=torch.float64)

        def right(s):
            return lr_at(s, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup, decay_steps=decay)

        def curve(f):
            return torch.tensor([f(s) for s in steps], dtype=torch.float64)

        def wrong(warm, decay_fn):
            return curve(lambda s: warm(s) if s < warmup else (min_lr if s >= decay else decay_fn(s)))

        good_warm = lambda s: max_lr * (s + 1) / warmup  # noqa: E731
        progress = lambda s: (s - warmup) / (decay - warmup)  # noqa: E731
        cosine = lambda s: min_lr + 0.5 * (1 + math.cos(math.pi * progress(s))) * (max_lr - min_lr)  # noqa: E731
        expected = curve(right)
        compare("q2", got, expected, name=f"the rates for steps 0..{decay + 4} (max_lr={max_lr:g}, min_lr={min_lr:g}, "
                f"warmup_steps={warmup}, decay_steps={decay})", rtol=1e-9, atol=1e-12, mistakes=[
            ("off by one at the start: the warm-up uses step / warmup_steps, so step 0 has rate 0 and does not "
             "move at all; use (step + 1) / warmup_steps, which reaches max_lr at step warmup_steps - 1",
             wrong(lambda s: max_lr * s / warmup, cosine)),
            ("off by one at the end of the warm-up: with `step <= warmup_steps` the warm-up runs one step too "
             f"long and step {warmup} gets {max_lr * (warmup + 1) / warmup:g}, above max_lr; the warm-up "
             "is the steps 0 .. warmup_steps - 1",
             curve(lambda s: good_warm(s) if s <= warmup else (min_lr if s >= decay else cosine(s)))),
            ("your whole curve is the right one one step late (you return the rate of step - 1)",
             curve(lambda s: 0.0 if s == 0 else right(s - 1))),
            ("your whole curve is the right one one step early (you return the rate of step + 1)",
             curve(lambda s: right(s + 1))),
            ("the cosine decays to 0 and ignores min_lr",
             wrong(good_warm, lambda s: 0.5 * (1 + math.cos(math.pi * progress(s))) * max_lr)),
            ("the cosine's progress is step / decay_steps; measure it from the end of the warm-up: "
             "(step - warmup_steps) / (decay_steps - warmup_steps)",
             wrong(good_warm, lambda s: min_lr + 0.5 * (1 + math.cos(math.pi * s / decay)) * (max_lr - min_lr))),
            ("a linear decay instead of half a cosine",
             wrong(good_warm, lambda s: max_lr - progress(s) * (max_lr - min_lr))),
            ("no warm-up: the first steps already use max_lr", wrong(lambda s: max_lr, cosine)),
        ], hint="print your rates for a small case (warmup_steps=2, decay_steps=6) next to the formula")
    passed("q2", "the schedule equals train.lr_at, step by step, through warm-up, cosine decay and the floor")


# --------------------------------------------------------------------------- q3: a learning-rate sweep

LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
STEPS = 100
BETAS = (0.9, 0.999)
EPS = 1e-8


def quadratic_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """The sweep's problem: loss(w) = 1/2 sum_i c_i (w_i - t_i)^2, curvatures c from 0.01 to 100."""
    curvature = torch.logspace(-2, 2, 10, dtype=torch.float64)
    target = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)
    return curvature, target


def quadratic_loss(w: torch.Tensor) -> float:
    curvature, target = quadratic_problem()
    return float(0.5 * (curvature * (w - target) ** 2).sum())


def quadratic_grad(w: torch.Tensor) -> torch.Tensor:
    curvature, target = quadratic_problem()
    return curvature * (w - target)


def sweep_final_losses() -> dict[float, float]:
    """The check's own run of q3: the final loss of STEPS reference-Adam steps for every learning rate."""
    finals = {}
    for lr in LEARNING_RATES:
        w = torch.zeros(10, dtype=torch.float64)
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for t in range(1, STEPS + 1):
            grad = quadratic_grad(w)
            m = BETAS[0] * m + (1 - BETAS[0]) * grad
            v = BETAS[1] * v + (1 - BETAS[1]) * grad ** 2
            w = w - lr * (m / (1 - BETAS[0] ** t)) / ((v / (1 - BETAS[1] ** t)).sqrt() + EPS)
        finals[lr] = quadratic_loss(w)
    return finals


def q3(best_lr, best_final_loss, adam_step) -> None:
    """The learning rate of LEARNING_RATES with the lowest loss after STEPS steps, and that loss."""
    requires("q3", "q1", "adam_step", lambda: q1(adam_step))
    answered("q3", best_lr, "best_lr")
    finals = sweep_final_losses()
    best = min(finals, key=finals.get)
    grid_value = on_grid(best_lr, LEARNING_RATES)
    if grid_value is None:
        fail("q3", f"`best_lr` = {best_lr!r} is not one of LEARNING_RATES {LEARNING_RATES}.",
             "report the learning rate itself, as it appears in LEARNING_RATES")
    best_lr = grid_value
    if best_lr != best:
        worst = max(finals, key=finals.get)
        extra = (" That is the learning rate with the HIGHEST final loss: pick the minimum."
                 if best_lr == worst else "")
        fail("q3", f"`best_lr` = {best_lr:g} ends at loss {finals[best_lr]:.4g}, but another learning rate of "
                   f"the sweep ends lower.{extra}",
             "compare the loss after the LAST step of every run, all runs started from zeros with fresh m, v")
    initial = quadratic_loss(torch.zeros(10, dtype=torch.float64))
    measured("q3", best_final_loss, finals[best], tolerance=1e-6 * max(1.0, finals[best]) + 1e-9,
             name="best_final_loss", what=f"the loss after {STEPS} steps at lr={best:g}",
             mistakes=[("the loss before any step (all zeros)", initial)],
             hint="the loss after the last step of the best run, from quadratic_loss")
    passed("q3", f"lr={best:g} wins the sweep, ending at loss {finals[best]:.3g} (from {initial:.3g})")


# --------------------------------------------------------------------------- q4: bias correction


def uncorrected_ratio(t: int, beta1: float, beta2: float) -> float:
    """How many times larger the step of raw m / sqrt(v) is than the corrected step, for a constant gradient."""
    return (1 - beta1 ** t) / math.sqrt(1 - beta2 ** t)


def first_step_within(beta1: float, beta2: float, tolerance: float = 0.1) -> int:
    t = 1
    while abs(uncorrected_ratio(t, beta1, beta2) - 1) > tolerance:
        t += 1
    return t


def q4(first_ratio, steps_until_close) -> None:
    """Adam without bias correction, β1 = 0.9, β2 = 0.999, a constant gradient: the ratio of its first
    step to the corrected one, and the first step t at which that ratio is within 10 % of 1."""
    ratio = uncorrected_ratio(1, 0.9, 0.999)
    measured("q4", first_ratio, ratio, tolerance=0.01, name="first_ratio",
             what="(1 - 0.9) / sqrt(1 - 0.999)", mistakes=[
                 ("the inverse ratio (corrected over uncorrected)", 1 / ratio),
                 ("the square root is missing on the v side", 0.1 / 0.001),
                 ("β1 and β2 swapped", uncorrected_ratio(1, 0.999, 0.9)),
             ], hint="write the uncorrected step m / sqrt(v) for t = 1 with m = (1 - β1) g and v = (1 - β2) g²")
    expected = first_step_within(0.9, 0.999)
    answered("q4", steps_until_close, "steps_until_close")
    measured("q4", steps_until_close, expected, tolerance=0.5, name="steps_until_close",
             what="the first t with |ratio(t) - 1| <= 0.1", mistakes=[
                 ("one step late: the first t that satisfies the condition, not the one after it", expected + 1),
                 ("one step early: the last t that does NOT satisfy it", expected - 1),
                 ("β1 and β2 swapped", first_step_within(0.999, 0.9)),
             ], hint="loop t from 1 and stop at the first t with abs(ratio(t) - 1) <= 0.1")
    passed("q4", f"without bias correction the first step is {ratio:.2f}x too large, and it takes "
                 f"{expected} steps to come within 10 % of the corrected step")
