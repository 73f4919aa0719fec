"""Checks for exercises/09_sweet_spot.ipynb: grid trials, expected improvement, a GP's mean,
a power-law fit and Chinchilla's compute-optimal split.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds) and compares with `llmcourse.search` (itself tested against direct formulas: a
matrix-inverse GP, EI by Monte Carlo, fits of known laws). Messages name the classic mistakes:
a grid whose last dimension is not the fast one or that misses its ends, EI for maximising
instead of minimising or with the variance for the standard deviation, a GP mean without K^-1,
alpha with the wrong sign, C = 2ND instead of 6ND.
"""
from __future__ import annotations

import itertools
import math

import torch

from llmcourse import search
from llmcourse.checks.core import call, compare, fail, passed


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def q1(grid_trials, seed: int = 0) -> None:
    """Every combination of n evenly spaced values per dimension, ends included, last dimension fastest."""
    g = _rng(seed)
    for dims, n in [(2, 3), (3, 2), (1, 4)]:
        lows = torch.randint(-5, 5, (dims,), generator=g).double()
        bounds = [(float(lo), float(lo) + float(torch.randint(1, 6, (1,), generator=g))) for lo in lows]
        got = call("q1", grid_trials, bounds, n)
        expected = search.grid_points(bounds, n)
        if isinstance(got, torch.Tensor):
            got = got.double()
        axes = [torch.linspace(lo, hi, n + 1, dtype=torch.float64)[:-1] for lo, hi in bounds]
        no_end = torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=torch.float64)
        order = sorted(range(len(expected)), key=lambda i: tuple(expected[i].tolist()[::-1]))
        first_fast = expected[order]
        mistakes = [("the high end of each range is missing (arange-like spacing); the grid must include both "
                     "ends: torch.linspace(low, high, n)", no_end)]
        if dims > 1:
            mistakes.append(("the FIRST dimension varies fastest; like nested for-loops "
                             "(itertools.product), the LAST should", first_fast))
            mistakes.append(("only n points, one value per dimension at a time (zip) instead of every "
                             "combination (itertools.product)",
                             torch.stack([torch.linspace(lo, hi, n, dtype=torch.float64) for lo, hi in bounds], 1)))
        compare("q1", got, expected, name=f"the grid for bounds {bounds}, n = {n}", mistakes=mistakes,
                hint="itertools.product over one torch.linspace(low, high, n) per dimension: n ** D rows, D columns")
    passed("q1", "grids have n ** D rows: every combination, ends included, last dimension fastest")


def q2(expected_improvement, seed: int = 0) -> None:
    """EI for minimisation: (best - mean) Phi(z) + sd phi(z), z = (best - mean) / sd."""
    g = _rng(seed + 100)
    mean = torch.randn(12, generator=g, dtype=torch.float64)
    var = torch.rand(12, generator=g, dtype=torch.float64) * 2 + 0.05
    best = float(torch.randn(1, generator=g))
    got = call("q2", expected_improvement, mean.clone(), var.clone(), best)
    expected = search.expected_improvement(mean, var, best)
    sd = var.sqrt()
    z = (best - mean) / sd
    mistakes = [
        ("that is the EI for MAXIMISING (mean - best); we minimise a loss, so improvement is best - mean",
         (mean - best) * search.normal_cdf((mean - best) / sd) + sd * search.normal_pdf((mean - best) / sd)),
        ("the variance was used where the standard deviation belongs (sd = sqrt(var))",
         (best - mean) * search.normal_cdf((best - mean) / var) + var * search.normal_pdf((best - mean) / var)),
        ("the exploration term sd * phi(z) is missing", (best - mean) * search.normal_cdf(z)),
        ("only the exploration term; (best - mean) * Phi(z) is missing", sd * search.normal_pdf(z)),
        ("the predicted improvement without uncertainty (max(best - mean, 0)): that is EI with sd = 0",
         (best - mean).clamp_min(0)),
    ]
    compare("q2", got, expected, name="EI", mistakes=mistakes, rtol=1e-5, atol=1e-7,
            hint="z = (best - mean) / sd; Phi(z) = (1 + erf(z / sqrt 2)) / 2; phi(z) = exp(-z^2 / 2) / sqrt(2 pi)")
    passed("q2", "expected improvement equals (best - mean) Phi(z) + sd phi(z) on 12 points")


def q3(gp_mean, seed: int = 0) -> None:
    """The GP posterior mean at one point: k*^T (K + noise I)^-1 y with the RBF kernel."""
    g = _rng(seed + 200)
    x = torch.rand(6, 2, generator=g, dtype=torch.float64)
    y = torch.randn(6, generator=g, dtype=torch.float64)
    x_new = torch.rand(2, generator=g, dtype=torch.float64)
    ell, noise = 0.3 + 0.2 * float(torch.rand(1, generator=g)), 0.05
    got = call("q3", gp_mean, x.clone(), y.clone(), x_new.clone(), ell, noise)
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            fail("q3", f"expected one number (the mean at x_new), got a tensor of shape {tuple(got.shape)}",
                 "x_new is one point (D,); return a float, e.g. with .item()")
        got = got.item()
    expected = float(search.gp_posterior(x, y, x_new[None], lengthscale=ell, noise=noise)[0])

    def mean_with(kernel, with_noise=True, invert=True):
        K = kernel(x, x) + (noise * torch.eye(6, dtype=torch.float64) if with_noise else 0)
        k = kernel(x, x_new[None])[:, 0]
        return float(k @ torch.linalg.solve(K, y)) if invert else float(k @ y)

    rbf = lambda a, b: search.rbf_kernel(a, b, ell)  # noqa: E731
    mistakes = [
        ("k*^T y: the K^-1 is missing (the trials are not de-correlated from each other)", mean_with(rbf, invert=False)),
        ("the kernel lacks the 2 in exp(-d^2 / (2 l^2))", mean_with(lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / ell ** 2))),
        ("the lengthscale was not squared: exp(-d^2 / (2 l))", mean_with(lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * ell)))),
        ("the distance was not squared: exp(-|d| / (2 l^2))", mean_with(lambda a, b: torch.exp(-torch.cdist(a, b) / (2 * ell ** 2)))),
        ("the noise term was left out of K (K + noise * I)", mean_with(rbf, with_noise=False)),
    ]
    compare("q3", got, expected, name="the posterior mean", mistakes=mistakes, rtol=1e-6, atol=1e-9,
            hint="K = k(X, X) + noise I (6 x 6); k* = k(X, x_new) (6,); mean = k* @ torch.linalg.solve(K, y)")
    passed("q3", "the GP posterior mean equals k*^T (K + noise I)^-1 y")


def q4(fit_given_E, seed: int = 0) -> None:
    """For a known E, log(L - E) = log A - alpha log N by least squares: returns (A, alpha), alpha > 0."""
    g = _rng(seed + 300)
    E = 1.0 + float(torch.rand(1, generator=g))
    A = 5.0 + 20 * float(torch.rand(1, generator=g))
    alpha = 0.2 + 0.3 * float(torch.rand(1, generator=g))
    n = torch.logspace(2, 6, 6, dtype=torch.float64)
    loss = E + A * n.pow(-alpha) * (1 + 0.02 * torch.randn(6, generator=g, dtype=torch.float64))  # 2% noise on L - E
    got = call("q4", fit_given_E, n.clone(), loss.clone(), E)
    if not (isinstance(got, tuple) and len(got) == 2):
        fail("q4", f"expected a tuple (A, alpha), got {got!r:.80}", "return A, alpha")
    got = (float(got[0]), float(got[1]))
    design = torch.stack([torch.ones(6, dtype=torch.float64), -n.log()], 1)
    c = torch.linalg.solve(design.T @ design, design.T @ (loss - E).log())
    expected = (math.exp(float(c[0])), float(c[1]))
    c0 = torch.linalg.solve(design.T @ design, design.T @ loss.log())
    mistakes = [("alpha has the wrong sign: L - E = A N^(-alpha) falls with N, so alpha > 0 is minus the slope",
                 (expected[0], -expected[1])),
                ("E was not subtracted before taking the log", (math.exp(float(c0[0])), float(c0[1]))),
                ("A was returned as log A (the intercept); A = exp(intercept)", (math.log(expected[0]), expected[1])),
                ("A = 10 ** intercept of a natural-log fit (mixed log bases)", (10 ** math.log(expected[0]), expected[1]))]
    for (label, wrong) in mistakes:
        if all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, wrong)) and not all(
                math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, expected)):
            fail("q4", f"(A, alpha) looks like the result of a classic mistake: {label}.")
    if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, expected)):
        fail("q4", f"(A, alpha) should be ({expected[0]:.6g}, {expected[1]:.6g}), got ({got[0]:.6g}, {got[1]:.6g})",
             "least squares of y = log(L - E) on columns [1, -log N]: the normal equations (X^T X) c = X^T y")
    passed("q4", f"the log-space least-squares fit gives A = {expected[0]:.3g}, alpha = {expected[1]:.3g} "
                 f"(the data came from A = {A:.3g}, alpha = {alpha:.3g}, with 2% noise on L - E)")


def q5(chinchilla, seed: int = 0) -> None:
    """N = sqrt(C / 120), D = 20 N: C = 6 N D with D = 20 N."""
    g = _rng(seed + 400)
    for _ in range(3):
        C = 10 ** (18 + 6 * float(torch.rand(1, generator=g)))
        got = call("q5", chinchilla, C)
        if not (isinstance(got, tuple) and len(got) == 2):
            fail("q5", f"expected a tuple (N, D), got {got!r:.80}", "return n_params, n_tokens")
        got = (float(got[0]), float(got[1]))
        n, d = search.chinchilla_optimal(C)
        mistakes = [("C = 2 N D is the forward pass only; training (forward + backward) costs C = 6 N D",
                     (math.sqrt(C / 40), 20 * math.sqrt(C / 40))),
                    ("the 6 of C = 6 N D is missing (C = N D)", (math.sqrt(C / 20), 20 * math.sqrt(C / 20))),
                    ("N and D are swapped: D (tokens) is 20 times N (parameters)", (d, n)),
                    ("no square root: C = 120 N^2, so N = sqrt(C / 120)", (C / 120, 20 * C / 120))]
        for label, wrong in mistakes:
            if all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, wrong)):
                fail("q5", f"(N, D) for C = {C:.3g} looks like the result of a classic mistake: {label}.")
        if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, (n, d))):
            fail("q5", f"for C = {C:.3g} FLOPs expected (N, D) = ({n:.4g}, {d:.4g}), got ({got[0]:.4g}, {got[1]:.4g})",
                 "C = 6 N D and D = 20 N give C = 120 N^2")
    passed("q5", "compute-optimal N = sqrt(C / 120) parameters and D = 20 N tokens")
