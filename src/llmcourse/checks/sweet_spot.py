"""Checks for exercises/09_sweet_spot.ipynb: expected improvement, a Gaussian process's mean, a power-law
fit, the exponent of a scaling law fitted to given runs, and Chinchilla's compute-optimal size.

Each build check calls the student's function on inputs it makes itself (seeded; the hidden tests
use other seeds) and compares with `llmcourse.search` (itself tested against direct formulas: a
matrix-inverse GP, EI by Monte Carlo, fits of known laws). Messages name the classic mistakes: EI
for maximising instead of minimising or with the variance for the standard deviation, a GP mean
without K^-1, alpha with the wrong sign, E not subtracted, C = 2ND instead of 6ND. The experiment
check runs the same fit itself.
"""
from __future__ import annotations

import math

import torch

from llmcourse import search
from llmcourse.checks.core import answered, call, compare, fail, hint_giver, measured, passed, requires

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "build", "q4": "experiment", "q5": "interpret",
                  "q6": "interpret"}

HINTS = {
    "q1": ("EI adds two terms: how much better the candidate is expected to be, weighted by how likely it is "
           "better, and how uncertain it is, weighted by the normal density.",
           "Work with the standard deviation, the square root of var. Phi is the normal CDF, written with "
           "torch.erf; phi is the normal density. We minimise: improvement means best minus mean.",
           "sd = var.sqrt(); z = (best - mean) / sd; cdf = (1 + erf(z / sqrt 2)) / 2; pdf = exp(-z^2/2) / "
           "sqrt(2 pi); return (best - mean) * cdf + sd * pdf."),
    "q2": ("The GP's mean at a new point is a weighted sum of the observed losses; the weights come from how "
           "similar the new point is to each trial, corrected for how similar the trials are to each other.",
           "Build the kernel matrix K between all trials (plus noise on the diagonal) and the vector k* between "
           "the trials and x_new; solve K w = y rather than inverting K.",
           "kernel(a, b) = exp(-cdist(a, b)**2 / (2 l**2)); K = kernel(x, x) + noise * eye(n); "
           "k_star = kernel(x, x_new[None])[:, 0]; return float(k_star @ solve(K, y))."),
    "q3": ("Once E is known, the law is a straight line in log-log space: fit that line by least squares.",
           "The design matrix has a column of ones (for log A) and a column of minus log N (for alpha); the "
           "target is log(L - E). Solve the normal equations with torch.linalg.solve.",
           "X = stack([ones, -log N], 1); c = solve(X.T @ X, X.T @ log(L - E)); return exp(c[0]), c[1]."),
    "q4": ("You do not know E: try many values of E, fit A and alpha for each with your q3, and keep the E "
           "whose curve passes closest to the runs.",
           "For every E of E_GRID: (A, alpha) = fit_given_E(n, loss, E); the error is the sum of squared "
           "differences between E + A n^(-alpha) and the measured losses (in loss units, not in log space).",
           "best_E = min(E_GRID, key=error); then alpha_fitted = fit_given_E(n, loss, best_E)[1] and "
           "E_fitted = best_E, as floats."),
    "q5": ("Work out the compute-optimal model size for the budget first, then compare.",
           "Chinchilla: C = 6 N D FLOPs and D = 20 N tokens, so C = 120 N^2.",
           "optimal N = sqrt(C / 120); the factor is the proposed size divided by that."),
}
hint = hint_giver(HINTS)


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def q1(expected_improvement, seed: int = 0) -> None:
    """EI for minimisation: (best - mean) Phi(z) + sd phi(z), z = (best - mean) / sd."""
    g = _rng(seed + 100)
    mean = torch.randn(12, generator=g, dtype=torch.float64)
    var = torch.rand(12, generator=g, dtype=torch.float64) * 2 + 0.05
    best = float(torch.randn(1, generator=g))
    got = call("q1", expected_improvement, mean.clone(), var.clone(), best)
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
    compare("q1", got, expected, name="EI", mistakes=mistakes, rtol=1e-5, atol=1e-7,
            hint="z = (best - mean) / sd; Phi(z) = (1 + erf(z / sqrt 2)) / 2; phi(z) = exp(-z^2 / 2) / sqrt(2 pi)")
    passed("q1", "expected improvement equals (best - mean) Phi(z) + sd phi(z) on 12 points")


def q2(gp_mean, seed: int = 0) -> None:
    """The GP posterior mean at one point: k*^T (K + noise I)^-1 y with the RBF kernel."""
    g = _rng(seed + 200)
    x = torch.rand(6, 2, generator=g, dtype=torch.float64)
    y = torch.randn(6, generator=g, dtype=torch.float64)
    x_new = torch.rand(2, generator=g, dtype=torch.float64)
    ell, noise = 0.3 + 0.2 * float(torch.rand(1, generator=g)), 0.05
    got = call("q2", gp_mean, x.clone(), y.clone(), x_new.clone(), ell, noise)
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            fail("q2", f"expected one number (the mean at x_new), got a tensor of shape {tuple(got.shape)}",
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
    compare("q2", got, expected, name="the posterior mean", mistakes=mistakes, rtol=1e-6, atol=1e-9,
            hint="K = k(X, X) + noise I (6 x 6); k* = k(X, x_new) (6,); mean = k* @ torch.linalg.solve(K, y)")
    passed("q2", "the GP posterior mean equals k*^T (K + noise I)^-1 y")


def q3(fit_given_E, seed: int = 0) -> None:
    """For a known E, log(L - E) = log A - alpha log N by least squares: returns (A, alpha), alpha > 0."""
    g = _rng(seed + 300)
    E = 1.0 + float(torch.rand(1, generator=g))
    A = 5.0 + 20 * float(torch.rand(1, generator=g))
    alpha = 0.2 + 0.3 * float(torch.rand(1, generator=g))
    n = torch.logspace(2, 6, 6, dtype=torch.float64)
    loss = E + A * n.pow(-alpha) * (1 + 0.02 * torch.randn(6, generator=g, dtype=torch.float64))  # 2% noise on L - E
    got = call("q3", fit_given_E, n.clone(), loss.clone(), E)
    if not (isinstance(got, tuple) and len(got) == 2):
        fail("q3", f"expected a tuple (A, alpha), got {got!r:.80}", "return A, alpha")
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
            fail("q3", f"(A, alpha) looks like the result of a classic mistake: {label}.")
    if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, expected)):
        fail("q3", f"(A, alpha) should be ({expected[0]:.6g}, {expected[1]:.6g}), got ({got[0]:.6g}, {got[1]:.6g})",
             "least squares of y = log(L - E) on columns [1, -log N]: the normal equations (X^T X) c = X^T y")
    passed("q3", f"the log-space least-squares fit gives A = {expected[0]:.3g}, alpha = {expected[1]:.3g} "
                 f"(the data came from A = {A:.3g}, alpha = {alpha:.3g}, with 2% noise on L - E)")


# --------------------------------------------------------------------------- q4: a law fitted to runs

RUN_SIZES = torch.logspace(4, 7, 7, dtype=torch.float64)          # parameters of 7 runs, 10k to 10M


def scaling_runs() -> tuple[torch.Tensor, torch.Tensor]:
    """Sizes and final losses of 7 training runs: a power law with 1 % noise (seed 0), E not given."""
    noise = 1 + 0.01 * torch.randn(len(RUN_SIZES), generator=_rng(0), dtype=torch.float64)
    return RUN_SIZES.clone(), search.power_law(RUN_SIZES, 1.7, 30.0, 0.28) * noise


def e_grid() -> torch.Tensor:
    """The values of E to try: 200 values from 0 to just below the smallest loss."""
    _, loss = scaling_runs()
    return torch.linspace(0.0, float(loss.min()) - 1e-3, 200, dtype=torch.float64)


def _fit(n, loss, E):
    design = torch.stack([torch.ones_like(n), -n.log()], 1)
    c = torch.linalg.solve(design.T @ design, design.T @ (loss - E).log())
    return math.exp(float(c[0])), float(c[1])


def fit_unknown_E() -> tuple[float, float, float]:
    """The check's own run of q4: (E, A, alpha) of the best E of the grid, by squared error in loss units."""
    n, loss = scaling_runs()

    def error(E):
        A, alpha = _fit(n, loss, E)
        return float(((E + A * n.pow(-alpha) - loss) ** 2).sum())
    best = min(e_grid().tolist(), key=error)
    return (best, *_fit(n, loss, best))


def q4(alpha_fitted, E_fitted, fit_given_E) -> None:
    """The exponent and the irreducible loss of the law fitted to scaling_runs() over e_grid()."""
    requires("q4", "q3", "fit_given_E", lambda: q3(fit_given_E))
    answered("q4", alpha_fitted, "alpha_fitted")
    E, A, alpha = fit_unknown_E()
    n, loss = scaling_runs()
    _, alpha_at_0 = _fit(n, loss, 0.0)

    def log_error(E_):
        A_, alpha_ = _fit(n, loss, E_)
        return float(((A_ * n.pow(-alpha_)).log() - (loss - E_).log()).pow(2).sum())
    E_log = min(e_grid().tolist(), key=log_error)
    measured("q4", alpha_fitted, alpha, tolerance=1e-6, name="alpha_fitted", what=f"best E = {E:.4f} of the grid",
             mistakes=[("that is the exponent for E = 0: the irreducible loss was not fitted", alpha_at_0),
                       ("the error was measured in log space, log(L - E), which changes with E itself; "
                        "measure it on the losses", _fit(n, loss, E_log)[1]),
                       ("alpha has the wrong sign", -alpha)],
             hint="for every E of the grid fit (A, alpha), compute the squared error of E + A n^-alpha against "
                  "the losses, and keep the best E")
    measured("q4", E_fitted, E, tolerance=1e-6, name="E_fitted", what="the E of the grid with the smallest error")
    passed("q4", f"L(N) = {E:.3f} + {A:.3g} N^-{alpha:.4f} (the runs came from E = 1.7, A = 30, alpha = 0.28, "
                 "with 1 % noise)")


# --------------------------------------------------------------------------- q5: Chinchilla

BUDGET_FLOPS, PROPOSED_PARAMETERS = 1e21, 70e9


def q5(oversize_factor) -> None:
    """How many times larger than compute-optimal a PROPOSED_PARAMETERS model is for BUDGET_FLOPS."""
    answered("q5", oversize_factor, "oversize_factor")
    optimal = search.chinchilla_optimal(BUDGET_FLOPS)[0]
    expected = PROPOSED_PARAMETERS / optimal
    measured("q5", oversize_factor, expected, tolerance=0.01 * expected, name="oversize_factor",
             what=f"the compute-optimal size is {optimal:.3g} parameters", mistakes=[
                 ("the inverse: optimal over proposed", 1 / expected),
                 ("C = 2 N D is the forward pass only; training costs C = 6 N D", PROPOSED_PARAMETERS / math.sqrt(BUDGET_FLOPS / 40)),
                 ("the 6 of C = 6 N D is missing", PROPOSED_PARAMETERS / math.sqrt(BUDGET_FLOPS / 20)),
                 ("no square root: C = 120 N^2", PROPOSED_PARAMETERS / (BUDGET_FLOPS / 120)),
             ], hint="C = 6 N D with D = 20 N gives C = 120 N^2")
    tokens = BUDGET_FLOPS / (6 * PROPOSED_PARAMETERS)
    passed("q5", f"a {PROPOSED_PARAMETERS:.0e}-parameter model is {expected:.1f}x the optimal {optimal:.2e}; "
                 f"the budget would give it only {tokens:.2e} tokens, {tokens / PROPOSED_PARAMETERS:.2f} per parameter")
