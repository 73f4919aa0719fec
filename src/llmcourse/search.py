"""Finding the sweet spot: hyperparameter search and scaling-law fits.

The deck's four selection strategies, each as a few small functions:

* grid search: try every combination of a few values per hyperparameter (`grid_points`,
  `grid_search`);
* random search: sample combinations uniformly at random (`random_points`, `random_search`);
* Bayesian optimisation: fit a Gaussian process (GP) to the trials so far, then try next where
  the *expected improvement* over the best loss is largest (`gp_posterior`,
  `expected_improvement`, `bayesian_optimisation`);
* scaling laws: fit L(N) = E + A * N^(-alpha) to small runs and predict a bigger one
  (`fit_power_law`, `power_law`), and Chinchilla's compute-optimal split C = 6 N D with D = 20 N
  (`chinchilla_optimal`).

A search space is a list of (low, high) bounds, one per hyperparameter, on the scale the search
should treat as uniform (search a learning rate or a smoothing constant by its log10). Every
search minimises `objective(x)`, where `x` is a 1-D float tensor with one value per bound, and
returns a `SearchResult` with the points tried, in order, and their losses:

    result = random_search(lambda x: float((x ** 2).sum()), [(-1, 1), (-1, 1)], n_trials=10, seed=0)
    result.xs.shape, result.ys.shape, result.best_so_far()   # (10, 2), (10,), running minimum

Nothing here needs SciPy: the normal distribution's cdf is written with `torch.erf`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from llmcourse.validate import check_int, check_number

Bounds = Sequence[tuple[float, float]]


# ----------------------------------------------------------------------------- search spaces
def _check_bounds(bounds: Bounds) -> torch.Tensor:
    """(low, high) pairs -> a (D, 2) float64 tensor, refusing empty or inverted bounds."""
    try:
        b = torch.as_tensor([[float(lo), float(hi)] for lo, hi in bounds], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bounds must be a list of (low, high) pairs of numbers; got {bounds!r}") from exc
    if b.shape[0] == 0:
        raise ValueError("bounds must name at least one hyperparameter; got an empty list")
    if not torch.isfinite(b).all() or not (b[:, 0] < b[:, 1]).all():
        raise ValueError(f"bounds must be finite (low, high) pairs with low < high; got {bounds!r}")
    return b



def grid_points(bounds: Bounds, n_per_dim: int) -> torch.Tensor:
    """Every combination of `n_per_dim` evenly spaced values per dimension: (n_per_dim ** D, D).

        >>> grid_points([(0, 1), (10, 20)], 2).tolist()
        [[0.0, 10.0], [0.0, 20.0], [1.0, 10.0], [1.0, 20.0]]

    The values of one dimension include both ends; with n_per_dim == 1 it is the midpoint.
    The last dimension varies fastest (like nested for-loops).
    """
    b = _check_bounds(bounds)
    check_int(n_per_dim, "n_per_dim")
    axes = [torch.linspace(lo, hi, n_per_dim, dtype=torch.float64) if n_per_dim > 1
            else torch.tensor([(lo + hi) / 2], dtype=torch.float64) for lo, hi in b.tolist()]
    return torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=torch.float64)


def random_points(bounds: Bounds, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` points drawn uniformly inside the bounds: (n, D)."""
    b = _check_bounds(bounds)
    check_int(n, "n")
    u = torch.rand(n, b.shape[0], generator=generator, dtype=torch.float64)  # (n, D) in [0, 1)
    return b[:, 0] + u * (b[:, 1] - b[:, 0])


# ----------------------------------------------------------------------------- running searches
@dataclass
class SearchResult:
    """The trials of one search, in the order they were run."""

    method: str
    xs: torch.Tensor   # (n_trials, D) the hyperparameters tried
    ys: torch.Tensor   # (n_trials,) the loss of each

    def best_so_far(self) -> torch.Tensor:
        """The lowest loss seen up to and including each trial: (n_trials,)."""
        return torch.cummin(self.ys, dim=0).values

    @property
    def best_x(self) -> torch.Tensor:
        return self.xs[int(self.ys.argmin())]

    @property
    def best_y(self) -> float:
        return float(self.ys.min())


def _evaluate(objective: Callable[[torch.Tensor], float], xs: torch.Tensor) -> torch.Tensor:
    ys = torch.tensor([float(objective(x)) for x in xs], dtype=torch.float64)
    if not torch.isfinite(ys).all():
        raise ValueError(f"the objective returned a non-finite loss at {xs[~torch.isfinite(ys)][0].tolist()}")
    return ys


def grid_search(objective, bounds: Bounds, n_per_dim: int) -> SearchResult:
    """Evaluate the objective at every point of `grid_points(bounds, n_per_dim)`."""
    xs = grid_points(bounds, n_per_dim)
    return SearchResult("grid", xs, _evaluate(objective, xs))


def random_search(objective, bounds: Bounds, n_trials: int, seed: int = 0) -> SearchResult:
    """Evaluate the objective at `n_trials` uniformly random points."""
    check_int(n_trials, "n_trials")
    xs = random_points(bounds, n_trials, torch.Generator().manual_seed(seed))
    return SearchResult("random", xs, _evaluate(objective, xs))


# ----------------------------------------------------------------------------- Gaussian process
def rbf_kernel(a: torch.Tensor, b: torch.Tensor, lengthscale: float, variance: float = 1.0) -> torch.Tensor:
    """The squared-exponential (RBF) kernel k(a, b) = variance * exp(-|a - b|^2 / (2 lengthscale^2)).

    a: (n, D), b: (m, D) -> (n, m). Points closer than a lengthscale are strongly correlated:
    the GP believes their losses are similar.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (n, D) and (m, D) with the same D; got {tuple(a.shape)}, {tuple(b.shape)}")
    if not lengthscale > 0 or not variance > 0:
        raise ValueError(f"lengthscale and variance must be positive; got {lengthscale!r}, {variance!r}")
    sq_dist = torch.cdist(a, b).pow(2)                                       # (n, m)
    return variance * torch.exp(-sq_dist / (2 * lengthscale ** 2))


def gp_posterior(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, *,
                 lengthscale: float, variance: float = 1.0, noise: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """The GP's belief about the loss at `x_test`, given the trials (x_train, y_train).

    With K = k(X, X) + noise I, k* = k(X, x*), a zero prior mean:

        mean(x*) = k*^T K^-1 y          var(x*) = k(x*, x*) - k*^T K^-1 k*

    computed with a Cholesky factor K = L L^T (stable, no explicit inverse).
    x_train: (n, D), y_train: (n,), x_test: (m, D) -> mean (m,), variance (m,).
    """
    if x_train.dim() != 2 or y_train.shape != (x_train.shape[0],):
        raise ValueError(f"x_train must be (n, D) and y_train (n,); got {tuple(x_train.shape)}, {tuple(y_train.shape)}")
    if x_test.dim() != 2 or x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_test must be (m, {x_train.shape[1]}); got {tuple(x_test.shape)}")
    check_number(noise, "noise", minimum=0)
    K = rbf_kernel(x_train, x_train, lengthscale, variance) + noise * torch.eye(len(x_train), dtype=x_train.dtype)
    L = torch.linalg.cholesky(K)                                             # (n, n), K = L L^T
    k_star = rbf_kernel(x_train, x_test, lengthscale, variance)              # (n, m)
    alpha = torch.cholesky_solve(y_train[:, None], L)                        # (n, 1) = K^-1 y
    mean = (k_star * alpha).sum(0)                                           # (m,)
    v = torch.linalg.solve_triangular(L, k_star, upper=False)                # (n, m) = L^-1 k*
    var = (variance - (v * v).sum(0)).clamp_min(1e-12)                      # (m,)
    return mean, var


def gp_log_marginal_likelihood(x: torch.Tensor, y: torch.Tensor, *, lengthscale: float,
                               variance: float = 1.0, noise: float = 1e-6) -> float:
    """log p(y | x) under the GP: how well a lengthscale explains the trials (higher is better).

        -1/2 y^T K^-1 y - 1/2 log det K - n/2 log(2 pi)
    """
    K = rbf_kernel(x, x, lengthscale, variance) + noise * torch.eye(len(x), dtype=x.dtype)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(y[:, None], L)[:, 0]
    return float(-0.5 * y @ alpha - torch.log(torch.diagonal(L)).sum() - 0.5 * len(x) * math.log(2 * math.pi))


def normal_cdf(z: torch.Tensor) -> torch.Tensor:
    """Phi(z) = P(Z <= z) for a standard normal Z, from the error function: (1 + erf(z / sqrt 2)) / 2."""
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def normal_pdf(z: torch.Tensor) -> torch.Tensor:
    """phi(z) = exp(-z^2 / 2) / sqrt(2 pi)."""
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def expected_improvement(mean: torch.Tensor, var: torch.Tensor, best: float) -> torch.Tensor:
    """E[max(best - Y, 0)] for Y ~ Normal(mean, var): how much a trial is expected to beat `best`.

    For a loss we minimise, with sigma = sqrt(var) and z = (best - mean) / sigma:

        EI = (best - mean) * Phi(z) + sigma * phi(z)

    The first term rewards a low predicted loss (exploitation), the second an uncertain one
    (exploration). Example: mean = best, sigma = 1 gives EI = phi(0) = 0.399.
    """
    if mean.shape != var.shape:
        raise ValueError(f"mean and var must have the same shape; got {tuple(mean.shape)}, {tuple(var.shape)}")
    if (var < 0).any():
        raise ValueError("var must be >= 0 everywhere")
    sigma = var.sqrt().clamp_min(1e-12)
    z = (best - mean) / sigma
    return (best - mean) * normal_cdf(z) + sigma * normal_pdf(z)


LENGTHSCALES = (0.05, 0.1, 0.2, 0.4, 0.8)  # candidates, on the unit cube, picked by marginal likelihood


def bayesian_optimisation(objective, bounds: Bounds, n_trials: int, *, n_init: int = 4, seed: int = 0,
                          n_candidates: int = 2000, noise: float = 1e-4) -> SearchResult:
    """Try `n_init` random points, then repeatedly the point of highest expected improvement.

    Each step: scale the trials to the unit cube and standardise their losses; pick the
    lengthscale (from LENGTHSCALES) that maximises the GP's marginal likelihood; compute the GP
    posterior on `n_candidates` random candidates; evaluate the objective at the candidate of
    highest expected improvement over the best loss so far.
    """
    b = _check_bounds(bounds)
    check_int(n_trials, "n_trials")
    check_int(n_init, "n_init")
    g = torch.Generator().manual_seed(seed)
    span = b[:, 1] - b[:, 0]
    xs = random_points(bounds, min(n_init, n_trials), g)                     # (n_init, D)
    ys = _evaluate(objective, xs)
    while len(xs) < n_trials:
        u = (xs - b[:, 0]) / span                                            # (n, D) in [0, 1]
        y = (ys - ys.mean()) / ys.std().clamp_min(1e-12) if len(ys) > 1 else ys - ys.mean()
        ell = max(LENGTHSCALES, key=lambda s: gp_log_marginal_likelihood(u, y, lengthscale=s, noise=noise))
        candidates = torch.rand(n_candidates, b.shape[0], generator=g, dtype=torch.float64)  # (c, D)
        mean, var = gp_posterior(u, y, candidates, lengthscale=ell, noise=noise)
        ei = expected_improvement(mean, var, float(y.min()))
        x_next = b[:, 0] + candidates[int(ei.argmax())] * span
        xs = torch.cat([xs, x_next[None]])
        ys = torch.cat([ys, _evaluate(objective, x_next[None])])
    return SearchResult("bayesian", xs, ys)


# ----------------------------------------------------------------------------- scaling laws
def power_law(n, E: float, A: float, alpha: float) -> torch.Tensor:
    """L(N) = E + A * N^(-alpha): an irreducible loss E plus a part that shrinks with size N."""
    n = torch.as_tensor(n, dtype=torch.float64)
    return E + A * n.pow(-alpha)


def _fit_given_E(log_n: torch.Tensor, loss: torch.Tensor, E: float) -> tuple[float, float, float]:
    """Least squares of log(L - E) = log A - alpha log N; returns (A, alpha, squared error in L)."""
    design = torch.stack([torch.ones_like(log_n), -log_n], dim=1)           # (k, 2)
    target = torch.log(loss - E)                                              # (k,)
    coef = torch.linalg.solve(design.T @ design, design.T @ target)          # normal equations
    A, alpha = math.exp(float(coef[0])), float(coef[1])
    err = float(((E + A * torch.exp(-alpha * log_n) - loss) ** 2).sum())
    return A, alpha, err


def fit_power_law(n, loss, *, e_max: float | None = None) -> tuple[float, float, float]:
    """Fit L(N) = E + A * N^(-alpha) to losses at sizes N; returns (E, A, alpha).

    For a fixed E the law is a straight line in log space, log(L - E) = log A - alpha log N, so
    A and alpha come from linear least squares. E is then chosen, between 0 and just below the
    smallest loss (or `e_max`), to minimise the squared error of L itself: a coarse scan, then a
    golden-section refinement around the best scan point.

        >>> N = [1e3, 1e4, 1e5, 1e6]
        >>> [round(v, 4) for v in fit_power_law(N, power_law(N, 1.5, 20.0, 0.3))]   # the law it was given
        [1.5, 20.0, 0.3]
    """
    n = torch.as_tensor(n, dtype=torch.float64).flatten()
    loss = torch.as_tensor(loss, dtype=torch.float64).flatten()
    if n.shape != loss.shape or len(n) < 3:
        raise ValueError(f"n and loss must be equal-length sequences of at least 3 values; got {len(n)} and {len(loss)}")
    if not (n > 0).all() or not torch.isfinite(loss).all() or not (loss > 0).all():
        raise ValueError("n must be positive sizes and loss positive finite losses")
    log_n = n.log()
    top = float(loss.min()) if e_max is None else min(float(e_max), float(loss.min()))
    top -= 1e-9 * max(1.0, abs(top))
    err = lambda E: _fit_given_E(log_n, loss, E)[2]  # noqa: E731
    scan = torch.linspace(0.0, top, 401).tolist()
    i = min(range(len(scan)), key=lambda j: err(scan[j]))
    lo, hi = scan[max(i - 1, 0)], scan[min(i + 1, len(scan) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):                                                      # golden-section search
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if err(a) < err(b):
            hi = b
        else:
            lo = a
    E = (lo + hi) / 2
    A, alpha, _ = _fit_given_E(log_n, loss, E)
    return E, A, alpha


def chinchilla_optimal(compute_flops: float, tokens_per_parameter: float = 20.0) -> tuple[float, float]:
    """Compute-optimal model size N and training tokens D for a budget of C FLOPs (Chinchilla).

    Training costs C = 6 N D FLOPs; Hoffmann et al. (2022) found the best loss for a given C
    near D = 20 N. Together: C = 6 N (20 N) = 120 N^2, so N = sqrt(C / 120) and D = 20 N.

        >>> N, D = chinchilla_optimal(5.76e23)   # Chinchilla's own budget: ~70B parameters, ~1.4T tokens
        >>> f"{N:.2e} parameters, {D:.2e} tokens"
        '6.93e+10 parameters, 1.39e+12 tokens'
    """
    if not compute_flops > 0 or not tokens_per_parameter > 0:
        raise ValueError(f"compute_flops and tokens_per_parameter must be positive; got "
                         f"{compute_flops!r}, {tokens_per_parameter!r}")
    n = math.sqrt(compute_flops / (6 * tokens_per_parameter))
    return n, tokens_per_parameter * n


# ----------------------------------------------------------------------------- Kaplan and Chinchilla
def fit_log_line(x, y) -> tuple[float, float]:
    """Fit y = k * x^a by least squares on log y = log k + a log x; returns (a, k).

    The straight line on a log-log plot: Kaplan et al.'s pure power laws L(N) = (N_c / N)^alpha_N
    (a = -alpha_N) and the exponent of N_opt against compute (N_opt = k C^a) are both this fit.

        >>> [round(v, 6) for v in fit_log_line([1, 10, 100], [3, 30, 300])]   # y = 3 x^1
        [1.0, 3.0]
    """
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"x and y must be equal-length sequences of at least 2 values; got {len(x)} and {len(y)}")
    if not (x > 0).all() or not (y > 0).all():
        raise ValueError("x and y must be positive (their logarithms are fitted)")
    design = torch.stack([torch.ones_like(x), x.log()], dim=1)               # (k, 2)
    coef = torch.linalg.lstsq(design, y.log()[:, None]).solution[:, 0]        # log k, a
    return float(coef[1]), math.exp(float(coef[0]))


def isoflop_minimum(n, loss) -> tuple[float, float]:
    """The model size with the lowest loss along one IsoFLOP curve (one compute budget).

    Fits a parabola in log N, loss = a (log N)^2 + b log N + c, as Hoffmann et al. (2022, their
    "approach 2") did, and returns its vertex: (N_opt = exp(-b / 2a), the loss there). A curve
    that does not bend upwards (a <= 0), or whose vertex lies outside the sizes tried, is refused.
    """
    n = torch.as_tensor(n, dtype=torch.float64).flatten()
    loss = torch.as_tensor(loss, dtype=torch.float64).flatten()
    if n.shape != loss.shape or len(n) < 3 or not (n > 0).all():
        raise ValueError(f"n and loss must be equal-length sequences of at least 3 values, n > 0; got {len(n)} and {len(loss)}")
    log_n = n.log()
    design = torch.stack([log_n ** 2, log_n, torch.ones_like(log_n)], dim=1)  # (k, 3)
    a, b, c = torch.linalg.lstsq(design, loss[:, None]).solution[:, 0].tolist()
    x = -b / (2 * a) if a > 0 else math.nan
    if not float(log_n.min()) <= x <= float(log_n.max()):
        raise ValueError("the fitted parabola has no minimum inside the sizes tried: they do not bracket a minimum")
    return math.exp(x), a * x * x + b * x + c


def loss_surface(n, d, E: float, A: float, alpha: float, B: float, beta: float) -> torch.Tensor:
    """Chinchilla's parametric loss L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2).

    E: the irreducible loss (the entropy of the data); A / N^alpha: what a finite model misses;
    B / D^beta: what finite training data misses.
    """
    n = torch.as_tensor(n, dtype=torch.float64)
    d = torch.as_tensor(d, dtype=torch.float64)
    return E + A * n.pow(-alpha) + B * d.pow(-beta)


def fit_loss_surface(n, d, loss, *, E: float | None = None,
                     exponents: tuple[float, float] = (0.02, 1.5)) -> tuple[float, float, float, float, float]:
    """Fit L(N, D) = E + A N^-alpha + B D^-beta to runs (N, D, loss); returns (E, A, alpha, B, beta).

    For fixed exponents (alpha, beta) the law is linear in (E, A, B), so those come from least
    squares; the exponents are searched on a grid, refined three times around the best. E is
    kept in [0, smallest loss] (a negative entropy means nothing), or fixed when `E` is given
    (for instance the known entropy floor). A and B are kept >= 0. Minimises the squared error
    of L (Hoffmann et al. used a Huber loss on log L; with few runs the difference is small).
    """
    n = torch.as_tensor(n, dtype=torch.float64).flatten()
    d = torch.as_tensor(d, dtype=torch.float64).flatten()
    loss = torch.as_tensor(loss, dtype=torch.float64).flatten()
    if not n.shape == d.shape == loss.shape or len(n) < 5:
        raise ValueError(f"n, d and loss must be equal-length sequences of at least 5 runs; got {len(n)}, {len(d)}, {len(loss)}")
    if not ((n > 0).all() and (d > 0).all() and (loss > 0).all()):
        raise ValueError("n, d and loss must be positive")
    if E is not None and not 0 <= E < float(loss.min()):
        raise ValueError(f"a fixed E must be in [0, smallest loss = {float(loss.min()):.4f}); got {E!r}")
    lo, hi = exponents
    alphas = torch.linspace(lo, hi, 61, dtype=torch.float64)
    betas = torch.linspace(lo, hi, 61, dtype=torch.float64)
    for _ in range(4):                                                       # a grid, then 3 finer ones
        grid_a, grid_b = torch.meshgrid(alphas, betas, indexing="ij")
        err, E_fit, A, B = _surface_coefficients(n, d, loss, grid_a.flatten(), grid_b.flatten(), E)
        i = int(err.argmin())
        if not torch.isfinite(err[i]):
            raise ValueError("no exponents in the search range give A, B >= 0: the losses do not fall with N and D")
        alpha, beta = float(grid_a.flatten()[i]), float(grid_b.flatten()[i])
        step = 2 * float(alphas[1] - alphas[0])
        alphas = torch.linspace(max(alpha - step, 1e-3), alpha + step, 21, dtype=torch.float64)
        step = 2 * float(betas[1] - betas[0])
        betas = torch.linspace(max(beta - step, 1e-3), beta + step, 21, dtype=torch.float64)
    return float(E_fit[i]), float(A[i]), alpha, float(B[i]), beta


def _least_squares(columns: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batched least squares: columns (g, k, p), target (g, k) -> coefficients (g, p)."""
    return torch.linalg.lstsq(columns, target[..., None]).solution[..., 0]


def _surface_coefficients(n, d, loss, alpha, beta, E):
    """For each of g exponent pairs (alpha, beta: (g,)), the least-squares E, A, B and the squared error.

    E is kept in [0, min loss] (a fit that wants it outside is refitted with E on that bound) or
    fixed; pairs that need A < 0 or B < 0 get an infinite error. Returns (err, E, A, B), each (g,).
    """
    x = n[None, :].pow(-alpha[:, None])                                      # (g, k): N^-alpha
    y = d[None, :].pow(-beta[:, None])                                       # (g, k): D^-beta
    target = loss.expand_as(x)
    def with_E(E_value):                                                     # E_value: (g,)
        A, B = _least_squares(torch.stack([x, y], dim=-1), target - E_value[:, None]).unbind(-1)
        return E_value, A, B
    if E is None:
        E_free, A, B = _least_squares(torch.stack([torch.ones_like(x), x, y], dim=-1), target).unbind(-1)
        E_bounded, A_b, B_b = with_E(E_free.clamp(0.0, float(loss.min())))
        outside = (E_free < 0) | (E_free > float(loss.min()))
        E_fit, A, B = E_bounded, torch.where(outside, A_b, A), torch.where(outside, B_b, B)
    else:
        E_fit, A, B = with_E(torch.full_like(alpha, float(E)))
    err = ((E_fit[:, None] + A[:, None] * x + B[:, None] * y - target) ** 2).sum(-1)
    err = torch.where((A >= 0) & (B >= 0), err, torch.full_like(err, math.inf))
    return err, E_fit, A, B


def compute_optimal_size(compute_flops, A: float, alpha: float, B: float, beta: float) -> torch.Tensor:
    """N_opt(C) that minimises the fitted L(N, D) subject to C = 6 N D (Hoffmann et al. 2022, eq. 4):

        N_opt = G (C / 6)^(beta / (alpha + beta)),   G = (alpha A / (beta B))^(1 / (alpha + beta))

    (set dL/dN = 0 with D = C / (6 N)). The exponent beta / (alpha + beta) is what the IsoFLOP
    minima measure directly; Chinchilla found about 0.5, Kaplan et al. (2020) 0.73.
    """
    c = torch.as_tensor(compute_flops, dtype=torch.float64)
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return G * (c / 6).pow(beta / (alpha + beta))
