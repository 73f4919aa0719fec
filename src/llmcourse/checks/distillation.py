"""Checks for exercises/13_distillation.ipynb: softened softmax, KL divergence, the distillation loss, sizes.

Each check calls the student's function on its own seeded inputs (the hidden tests use other
seeds), compares with `llmcourse.distill` (itself tested against torch.nn.functional.kl_div and
cross_entropy) and names the classic mistakes: multiplying by T instead of dividing, KL the wrong
way round (student first), a missing T^2, a softened cross-entropy, alpha on the wrong term, a
ratio upside down, tied weights counted twice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse import distill
from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.model import GPT, GPTConfig


def _logits(seed: int, shape, scale: float = 2.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) for each row (last axis), p and q probabilities."""
    return (p * (p.log() - q.log())).sum(-1)


def q1(softened_softmax, seed: int = 0) -> None:
    """softmax(logits / T) over the last axis."""
    z = _logits(seed, (3 + seed % 3, 6 + seed % 5))
    for T in (1.0, 3.0, 0.5):
        got = call("q1", softened_softmax, z.clone(), T)
        probs = torch.softmax(z, -1)
        compare("q1", got, torch.softmax(z / T, -1), name=f"softened_softmax(z, {T})", mistakes=[
            ("multiplied the logits by T instead of dividing: softmax(z * T) gets *sharper* as T grows",
             torch.softmax(z * T, -1)),
            ("divided the probabilities by T (softmax(z) / T); divide the logits before the softmax", probs / T),
            ("ignored the temperature: that is the plain softmax", probs),
            ("softmax over the wrong axis (dim 0); each row is one distribution over the vocabulary",
             torch.softmax(z / T, 0)),
        ] if T != 1.0 else [
            ("softmax over the wrong axis (dim 0); each row is one distribution over the vocabulary",
             torch.softmax(z, 0)),
        ])
    passed("q1", "softmax(z / T) matches: T > 1 flattens, T < 1 sharpens")


def q2(kl_divergence, seed: int = 0) -> None:
    """KL(teacher || student) per row, averaged over the rows (PyTorch's reduction="batchmean")."""
    p = torch.softmax(_logits(seed, (5 + seed % 3, 8)), -1)               # teacher (rows, vocab)
    q = torch.softmax(_logits(seed + 100, (5 + seed % 3, 8)), -1)         # student
    got = call("q2", kl_divergence, p.clone(), q.clone())
    expected = _kl_rows(p, q).mean()
    compare("q2", got, expected, name="kl_divergence(teacher_probs, student_probs)", mistakes=[
        ("computed KL(student || teacher): the direction matters. The teacher is the target, so weigh by the "
         "teacher's probabilities: sum p * (log p - log q)", _kl_rows(q, p).mean()),
        ("summed over the rows instead of averaging them (average the per-row KL, like reduction='batchmean')",
         _kl_rows(p, q).sum()),
        ("averaged over every element (rows x vocab), like F.kl_div(reduction='mean'); sum over the vocabulary, "
         "then average over the rows", (p * (p.log() - q.log())).mean()),
        ("returned the cross-entropy -sum p log q: KL also subtracts the teacher's entropy (sum p log p)",
         (-(p * q.log()).sum(-1)).mean()),
        ("flipped the sign: KL is >= 0, sum p * (log p - log q)", -expected),
    ])
    got_same = call("q2", kl_divergence, p.clone(), p.clone())
    compare("q2", got_same, torch.zeros((), dtype=p.dtype), name="kl_divergence(p, p)",
            hint="the divergence of a distribution from itself is 0")
    passed("q2", "KL(teacher ‖ student) matches, and KL(p ‖ p) = 0")


def q3(distillation_loss, seed: int = 0) -> None:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)."""
    g = torch.Generator().manual_seed(seed + 7)
    s = _logits(seed, (6 + seed % 4, 9))                                   # student (positions, vocab)
    t = _logits(seed + 50, (6 + seed % 4, 9))                              # teacher
    y = torch.randint(0, 9, (s.shape[0],), generator=g)                    # hard labels
    for T, alpha in ((3.0, 0.7), (2.0, 0.4)):
        got = call("q3", distillation_loss, s.clone(), t.clone(), y.clone(), T, alpha)
        ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
        kl = _kl_rows(pt, ps).mean()
        ce = F.cross_entropy(s, y)
        compare("q3", got, alpha * T**2 * kl + (1 - alpha) * ce, name=f"distillation_loss(..., T={T}, alpha={alpha})",
                mistakes=[
                    ("forgot the T² on the soft term: without it the soft gradient shrinks like 1/T², so raising T "
                     "silently turns the teacher down", alpha * kl + (1 - alpha) * ce),
                    ("multiplied the soft term by T instead of T²", alpha * T * kl + (1 - alpha) * ce),
                    ("KL the wrong way round, KL(student || teacher): the teacher's softened distribution is the target",
                     alpha * T**2 * _kl_rows(ps, pt).mean() + (1 - alpha) * ce),
                    ("softened the student's logits in the cross-entropy too; the hard-label term uses the plain "
                     "logits (T = 1)", alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(s / T, y)),
                    ("swapped alpha and 1 - alpha: alpha weighs the soft (teacher) term",
                     (1 - alpha) * T**2 * kl + alpha * ce),
                    ("forgot to soften the teacher: both distributions use the same temperature T",
                     alpha * T**2 * _kl_rows(torch.softmax(t, -1), ps).mean() + (1 - alpha) * ce),
                ])
    passed("q3", "α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE matches")


def _models(seed: int) -> tuple[GPT, GPT]:
    torch.manual_seed(seed)
    teacher = GPT(GPTConfig(vocab_size=40 + seed % 7, context_length=16, n_layers=2 + seed % 2, d_model=32, n_heads=4))
    student = GPT(GPTConfig(vocab_size=40 + seed % 7, context_length=16, n_layers=1, d_model=8 + 8 * (seed % 2),
                            n_heads=2))
    return teacher, student


def q4(parameter_ratio, seed: int = 0) -> None:
    """How many times more parameters the teacher has than the student (tied weights counted once)."""
    teacher, student = _models(seed)

    def count(m, dedupe=True):
        if dedupe:
            return sum(p.numel() for p in m.parameters())
        return sum(v.numel() for v in m.state_dict().values())

    got = call("q4", parameter_ratio, teacher, student)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, int) and not isinstance(got, bool):
        if got == count(teacher) // count(student):
            fail("q4", f"parameter_ratio returned the int {got}: integer division (//) drops the fraction.",
                 "use / so that the ratio is a float")
        got = float(got)
    if not isinstance(got, float):
        fail("q4", f"parameter_ratio should return a float, got {type(got).__name__} {got!r:.60}")
    expected = count(teacher) / count(student)
    compare("q4", got, expected, name="parameter_ratio(teacher, student)", mistakes=[
        ("returned student / teacher: the ratio is teacher over student (a number > 1)", count(student) / count(teacher)),
        ("counted the tied embedding/output matrix twice (state_dict lists it under two names); "
         "model.parameters() yields each tensor once", count(teacher, False) / count(student, False)),
    ])
    passed("q4", f"the teacher has {expected:.2f} times the student's parameters")
