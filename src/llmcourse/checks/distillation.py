"""Checks for exercises/13_distillation.ipynb: the distillation loss, how its gradient scales with the
temperature, and what softening does to a teacher's distribution.

The build check calls the student's loss on its own seeded inputs (the hidden tests use other
seeds), compares with `llmcourse.distill` (itself tested against torch.nn.functional.kl_div and
cross_entropy) and names the classic mistakes: KL the wrong way round (student first), a missing
T^2 (or T instead of T^2), a softened cross-entropy, alpha on the wrong term, the teacher not
softened. The experiment checks measure the same gradients themselves.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from llmcourse import distill
from llmcourse.checks.core import answered, call, compare, hint_giver, measured, passed, random_logits, requires

QUESTION_KINDS = {"q1": "build", "q2": "experiment", "q3": "interpret", "q4": "interpret"}

HINTS = {
    "q1": ("Two terms: how far the student's softened distribution is from the teacher's softened one (a KL "
           "divergence with the teacher as the target), and the ordinary cross-entropy on the true labels.",
           "Soften both with the same T (divide the logits by T before the softmax); KL(p || q) sums "
           "p (log p - log q) over the vocabulary, then average over positions; multiply the soft term by T "
           "squared; the cross-entropy uses the plain student logits.",
           "log_p = log_softmax(teacher / T), log_q = log_softmax(student / T); soft = (p * (log_p - log_q))"
           ".sum(-1).mean(); return alpha * T**2 * soft + (1 - alpha) * F.cross_entropy(student, labels)."),
    "q2": ("Measure the size of the gradient that the soft term sends to the student's logits, at each "
           "temperature, and see how it changes with T on a log-log scale.",
           "For each T: a fresh copy of the student logits with requires_grad; loss = your distillation_loss "
           "with alpha = 1 (the soft term only); backward; the norm of the logits' gradient. The exponent is "
           "the slope of log(norm) against log(T), fitted by least squares.",
           "x = log T, y = log norm; slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean())**2).sum()."),
    "q3": ("Read the printed table: the first column is the probability of the teacher's favourite character.",
           "Go down the temperatures and stop at the first one where that probability is below one half.",
           "min(T for T, probs in softened.items() if probs.max() < 0.5)"),
}
hint = hint_giver(HINTS)


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) for each row (last axis), p and q probabilities."""
    return (p * (p.log() - q.log())).sum(-1)


def q1(distillation_loss, seed: int = 0) -> None:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)."""
    g = torch.Generator().manual_seed(seed + 7)
    s = random_logits(seed, (6 + seed % 4, 9), scale=2.5)  # student (positions, vocab)
    t = random_logits(seed + 50, (6 + seed % 4, 9), scale=2.5)  # teacher
    y = torch.randint(0, 9, (s.shape[0],), generator=g)                    # hard labels
    for T, alpha in ((3.0, 0.7), (2.0, 0.4), (1.0, 1.0)):
        got = call("q1", distillation_loss, s.clone(), t.clone(), y.clone(), T, alpha)
        ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
        kl = _kl_rows(pt, ps).mean()
        ce = F.cross_entropy(s, y)
        expected = distill.distillation_loss(s, t, y, temperature=T, alpha=alpha)
        compare("q1", got, expected, name=f"distillation_loss(..., T={T}, alpha={alpha})", mistakes=[
            ("forgot the T² on the soft term: without it the soft gradient shrinks like 1/T², so raising T "
             "silently turns the teacher down", alpha * kl + (1 - alpha) * ce),
            ("multiplied the soft term by T instead of T²", alpha * T * kl + (1 - alpha) * ce),
            ("KL the wrong way round, KL(student || teacher): the teacher's softened distribution is the target",
             alpha * T**2 * _kl_rows(ps, pt).mean() + (1 - alpha) * ce),
            ("softened the student's logits in the cross-entropy too; the hard-label term uses the plain "
             "logits (T = 1)", alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(s / T, y)),
            ("swapped alpha and 1 - alpha: alpha weighs the soft (teacher) term", (1 - alpha) * T**2 * kl + alpha * ce),
            ("forgot to soften the teacher: both distributions use the same temperature T",
             alpha * T**2 * _kl_rows(torch.softmax(t, -1), ps).mean() + (1 - alpha) * ce),
            ("summed the KL over the positions instead of averaging it",
             alpha * T**2 * _kl_rows(pt, ps).sum() + (1 - alpha) * ce),
            ("the cross-entropy -sum p log q instead of the KL: it also counts the teacher's entropy",
             alpha * T**2 * (-(pt * ps.log()).sum(-1)).mean() + (1 - alpha) * ce),
        ], hint="compute the soft and the hard term separately and print them")
    passed("q1", "α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE matches llmcourse.distill")


# --------------------------------------------------------------------------- q2: the T² argument

GRAD_TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0)


def gradient_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits, teacher logits (64 positions, 20 tokens) and labels for q2."""
    student, teacher = random_logits(1, (64, 20), scale=1.5), random_logits(2, (64, 20), scale=1.5)
    return student, teacher, teacher.argmax(-1)


def slope(xs, ys) -> float:
    x, y = torch.tensor(xs, dtype=torch.float64).log(), torch.tensor(ys, dtype=torch.float64).log()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def soft_gradient_norms(loss_fn=None) -> list[float]:
    """The check's own run of q2: |d loss / d student logits| with alpha = 1, at each GRAD_TEMPERATURES."""
    student, teacher, labels = gradient_example()
    norms = []
    for T in GRAD_TEMPERATURES:
        z = student.clone().requires_grad_(True)
        if loss_fn is None:
            loss = distill.distillation_loss(z, teacher, labels, temperature=T, alpha=1.0)
        else:
            loss = loss_fn(z, teacher, labels, T, 1.0)
        loss.backward()
        norms.append(float(z.grad.norm()))
    return norms


def q2(grad_exponent, distillation_loss) -> None:
    """The slope of log |gradient| against log T, for the loss with its T^2 factor, alpha = 1."""
    requires("q2", "q1", "distillation_loss", lambda: q1(distillation_loss))
    answered("q2", grad_exponent, "grad_exponent")
    norms = soft_gradient_norms()
    expected = slope(GRAD_TEMPERATURES, norms)
    without = slope(GRAD_TEMPERATURES, [n / T ** 2 for n, T in zip(norms, GRAD_TEMPERATURES)])
    measured("q2", grad_exponent, expected, tolerance=1e-4, name="grad_exponent",
             what="gradient norms " + ", ".join(f"T={T:g}: {n:.4f}" for T, n in zip(GRAD_TEMPERATURES, norms)),
             mistakes=[("that is the exponent WITHOUT the T² factor: use the full loss of q1", without),
                       ("the slope in log10 of the norm against the natural log of T (mixed bases)",
                        expected / 2.302585092994046)],
             hint="the slope of a least-squares line through the points (log T, log norm)")
    passed("q2", f"with T² the soft gradient scales like T^{expected:.2f} (almost flat); without it, like "
                 f"T^{without:.2f}: that is why Hinton et al. multiply by T²")


# --------------------------------------------------------------------------- q3: dark knowledge

PROMPT = "The function retur"
SOFTEN_TEMPERATURES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@functools.lru_cache(maxsize=1)
def teacher_logits() -> torch.Tensor:
    """The shipped character model's logits for the character after PROMPT: (vocab,)."""
    from llmcourse.checkpoints import load_pretrained
    pretrained = load_pretrained("python_docs_char")
    model, tok = pretrained.model.eval(), pretrained.tokenizer
    with torch.no_grad():
        return model(torch.tensor([tok.encode(PROMPT)]))[0][0, -1].double()


def softened_teacher() -> dict[float, torch.Tensor]:
    """The teacher's distribution after PROMPT at each SOFTEN_TEMPERATURES."""
    z = teacher_logits()
    return {T: torch.softmax(z / T, -1) for T in SOFTEN_TEMPERATURES}


def q3(first_T_below_half) -> None:
    """The first temperature of SOFTEN_TEMPERATURES at which the teacher's top character has p < 0.5."""
    answered("q3", first_T_below_half, "first_T_below_half")
    softened = softened_teacher()
    below = [T for T, p in softened.items() if float(p.max()) < 0.5]
    expected = min(below)
    earlier = [T for T in SOFTEN_TEMPERATURES if T < expected]
    mistakes = [("the last temperature at which the top character still has at least one half", earlier[-1])] if earlier else []
    measured("q3", first_T_below_half, expected, tolerance=1e-9, name="first_T_below_half",
             what="top probabilities " + ", ".join(f"T={T:g}: {float(p.max()):.3f}" for T, p in softened.items()),
             mistakes=mistakes)
    passed("q3", f"from T = {expected:g} the teacher's favourite has less than half the mass: the rest, its "
                 "'dark knowledge' about the other characters, becomes visible to the student")
