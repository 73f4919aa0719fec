"""Checks for exercises/08_training.ipynb: Adam's step, the learning-rate schedule, EMA windows, optimizer memory.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds) and compares with a trusted reference: `torch.optim.Adam` for the Adam step, the
library's `train.lr_at` (the schedule every training run of the course uses) and `optim`'s
formulas, themselves tested against PyTorch's real optimizer state. Messages name the classic
mistakes: no bias correction, β1 and β2 swapped, the square root missing, warm-up starting at 0,
a decay that ignores min_lr, Adam with one moment, Adafactor stored in full.
"""
from __future__ import annotations

import torch

from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.optim import adafactor_state_bytes, adam_state_bytes
from llmcourse.train import lr_at


def _adam_run(start, grads, lr, beta1, beta2, eps, *, correct=True, sqrt=True):
    """A reference Adam trajectory (or a classic mistake of it) from `start` over `grads`."""
    p, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = (m / (1 - beta1 ** t), v / (1 - beta2 ** t)) if correct else (m, v)
        p = p - lr * m_hat / ((v_hat.sqrt() if sqrt else v_hat) + eps)
    return p, m, v


def q1(adam_step, seed: int = 0) -> None:
    """adam_step(param, grad, m, v, step, lr, beta1, beta2, eps) -> (param, m, v), as torch.optim.Adam."""
    g = torch.Generator().manual_seed(seed)
    lr, beta1, beta2, eps = 0.01, 0.8, 0.95, 1e-8
    start = torch.randn(4, 3, generator=g, dtype=torch.float64)
    grads = [torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.1 for _ in range(6)]
    # the trusted reference: PyTorch's Adam on the same gradients
    p_ref = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([p_ref], lr=lr, betas=(beta1, beta2), eps=eps)
    p, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, grad in enumerate(grads, start=1):
        p_ref.grad = grad.clone()
        opt.step()
        out = call("q1", adam_step, p.clone(), grad.clone(), m.clone(), v.clone(), t, lr, beta1, beta2, eps)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            fail("q1", f"adam_step should return a tuple (param, m, v); got {type(out).__name__}",
                 "return the new parameter and both updated moments")
        p, m, v = out
        if t == 1:
            compare("q1", m, (1 - beta1) * grad, name="m after step 1",
                    mistakes=[("β1 and β2 swapped: m must use beta1", (1 - beta2) * grad)],
                    hint="m = beta1 * m + (1 - beta1) * grad")
            compare("q1", v, (1 - beta2) * grad ** 2, name="v after step 1",
                    mistakes=[("β1 and β2 swapped: v must use beta2", (1 - beta1) * grad ** 2),
                              ("v averages the gradient, not its square", (1 - beta2) * grad)],
                    hint="v = beta2 * v + (1 - beta2) * grad**2")
    expected = p_ref.detach()
    compare("q1", p, expected, name="the parameters after 6 Adam steps", rtol=1e-6, atol=1e-9, mistakes=[
        ("no bias correction: m and v start at 0, so divide them by (1 - beta1**step) and (1 - beta2**step)",
         _adam_run(start, grads, lr, beta1, beta2, eps, correct=False)[0]),
        ("β1 and β2 swapped (m must use beta1, v must use beta2)",
         _adam_run(start, grads, lr, beta2, beta1, eps)[0]),
        ("the square root is missing: divide by sqrt(v_hat) + eps, not by v_hat + eps",
         _adam_run(start, grads, lr, beta1, beta2, eps, sqrt=False)[0]),
        ("the step goes uphill: subtract lr * m_hat / (sqrt(v_hat) + eps)",
         2 * start - expected),
    ], hint="m_hat = m / (1 - beta1**step); v_hat = v / (1 - beta2**step); "
            "param - lr * m_hat / (sqrt(v_hat) + eps)")
    passed("q1", "six Adam steps land exactly where torch.optim.Adam does, with the same m and v")


def q2(lr_schedule, seed: int = 0) -> None:
    """lr_schedule(step, max_lr, min_lr, warmup_steps, decay_steps): warm-up then cosine, as train.lr_at."""
    import math

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

        def curve(f):
            return torch.tensor([f(s) for s in steps], dtype=torch.float64)

        def wrong(warm, decay_fn):
            return curve(lambda s: warm(s) if s < warmup else (min_lr if s >= decay else decay_fn(s)))

        good_warm = lambda s: max_lr * (s + 1) / warmup  # noqa: E731
        progress = lambda s: (s - warmup) / (decay - warmup)  # noqa: E731
        cosine = lambda s: min_lr + 0.5 * (1 + math.cos(math.pi * progress(s))) * (max_lr - min_lr)  # noqa: E731
        expected = curve(lambda s: lr_at(s, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup, decay_steps=decay))
        compare("q2", got, expected, name=f"the rates for steps 0..{decay + 4} (max_lr={max_lr:g}, min_lr={min_lr:g}, "
                f"warmup_steps={warmup}, decay_steps={decay})", rtol=1e-9, atol=1e-12, mistakes=[
            ("the warm-up starts at 0 (step / warmup_steps): step 0 would not move at all; use (step + 1) / warmup_steps",
             wrong(lambda s: max_lr * s / warmup, cosine)),
            ("the cosine decays to 0 and ignores min_lr",
             curve(lambda s: good_warm(s) if s < warmup else (min_lr if s >= decay else
                                                             0.5 * (1 + math.cos(math.pi * progress(s))) * max_lr))),
            ("the cosine's progress is step / decay_steps; measure it from the end of the warm-up: "
             "(step - warmup_steps) / (decay_steps - warmup_steps)",
             wrong(good_warm, lambda s: min_lr + 0.5 * (1 + math.cos(math.pi * s / decay)) * (max_lr - min_lr))),
            ("a linear decay instead of half a cosine",
             wrong(good_warm, lambda s: max_lr - progress(s) * (max_lr - min_lr))),
            ("no warm-up: the first steps already use max_lr", wrong(lambda s: max_lr, cosine)),
        ], hint="three branches: step < warmup_steps; step >= decay_steps; cosine in between")
    passed("q2", "the schedule equals train.lr_at, step by step, through warm-up, cosine decay and the floor")


def q3(ema_window, seed: int = 0) -> None:
    """ema_window(beta) = 1 / (1 - beta): how many recent values an EMA effectively averages."""
    g = torch.Generator().manual_seed(seed)
    betas = [0.9, 0.999] + [round(float(x), 3) for x in 0.5 + 0.49 * torch.rand(2, generator=g)]
    for beta in betas:
        got = call("q3", ema_window, beta)
        expected = 1.0 / (1.0 - beta)
        compare("q3", float(got) if isinstance(got, (int, float)) else got, expected,
                name=f"ema_window({beta})", rtol=1e-9, mistakes=[
                    ("that is the weight of the newest value (1 - beta), not the window", 1 - beta),
                    ("1 / beta: the window grows as beta approaches 1, without bound", 1 / beta),
                    ("beta / (1 - beta) is the mean AGE of the averaged values; the window is one more",
                     beta / (1 - beta)),
                ], hint="the weights (1 - beta) beta^k sum to 1; how many terms of weight (1 - beta) is that?")
    passed("q3", "β = 0.9 averages about 10 gradients, β = 0.999 about 1000")


def q4(optimizer_state_bytes, seed: int = 0) -> None:
    """optimizer_state_bytes(rows, cols, dtype_bytes) -> (adam_bytes, adafactor_bytes) for one matrix."""
    g = torch.Generator().manual_seed(seed)
    cases = [(1024, 4096, 4)] + [(int(torch.randint(2, 3000, (1,), generator=g)),
                                  int(torch.randint(2, 3000, (1,), generator=g)), b) for b in (2, 4)]
    for rows, cols, b in cases:
        out = call("q4", optimizer_state_bytes, rows, cols, b)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail("q4", f"optimizer_state_bytes should return a pair (adam_bytes, adafactor_bytes); got {out!r:.80}")
        adam, adafactor = (int(x) if isinstance(x, (int, float)) and float(x).is_integer() else x for x in out)
        expected_adam, expected_adafactor = adam_state_bytes((rows, cols), b), adafactor_state_bytes((rows, cols), b)
        where = f"for a {rows} x {cols} matrix with {b}-byte numbers"
        compare("q4", adam, expected_adam, name=f"Adam's state {where}", mistakes=[
            ("Adam keeps TWO moments (m and v), each as big as the matrix", rows * cols * b),
            ("bits, not bytes", 2 * rows * cols * b * 8),
            ("numbers, not bytes: multiply by dtype_bytes", 2 * rows * cols),
        ])
        compare("q4", adafactor, expected_adafactor, name=f"Adafactor's state {where}", mistakes=[
            ("stored in full (rows x cols); Adafactor keeps only row sums and column sums of g²", rows * cols * b),
            ("rows x cols x 2 is Adam; Adafactor keeps rows + cols numbers", 2 * rows * cols * b),
            ("bits, not bytes", (rows + cols) * b * 8),
            ("numbers, not bytes: multiply by dtype_bytes", rows + cols),
            ("Adafactor (as in the paper's default) has no first moment m: only the factored v",
             (rows + cols) * b + rows * cols * b),
        ])
    passed("q4", f"a 1024 x 4096 float32 matrix: Adam {adam_state_bytes((1024, 4096)):,} bytes, "
                 f"Adafactor {adafactor_state_bytes((1024, 4096)):,} bytes")
