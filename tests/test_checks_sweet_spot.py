"""The unit 09 checks: they pass correct answers and name each classic mistake."""
import itertools
import math

import pytest
import torch

from llmcourse import search
from llmcourse.checks import CheckFailure
from llmcourse.checks import sweet_spot as check


def grid(bounds, n):
    return torch.tensor(list(itertools.product(*[torch.linspace(lo, hi, n).tolist() for lo, hi in bounds])))


def ei(mean, var, best):
    sd = var.sqrt()
    z = (best - mean) / sd
    return (best - mean) * 0.5 * (1 + torch.erf(z / math.sqrt(2))) + sd * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def gp_mean(x, y, x_new, ell, noise, *, sq=2, two=2.0, ell_pow=2, with_noise=True, invert=True):
    kern = lambda a, b: torch.exp(-torch.cdist(a, b) ** sq / (two * ell ** ell_pow))  # noqa: E731
    K = kern(x, x) + (noise * torch.eye(len(x), dtype=x.dtype) if with_noise else 0)
    k = kern(x, x_new[None])[:, 0]
    return float(k @ torch.linalg.solve(K, y)) if invert else float(k @ y)


def fit(n, loss, E, subtract=True):
    design = torch.stack([torch.ones_like(n), -n.log()], 1)
    c = torch.linalg.solve(design.T @ design, design.T @ (loss - (E if subtract else 0)).log())
    return math.exp(float(c[0])), float(c[1])


def chin(C, k=120):
    n = math.sqrt(C / k)
    return n, 20 * n


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 2, 11, 12):
        check.q1(grid, seed=seed)
        check.q2(ei, seed=seed)
        check.q3(gp_mean, seed=seed)
        check.q4(fit, seed=seed)
        check.q5(chin, seed=seed)
    check.q1(search.grid_points)
    check.q2(search.expected_improvement)
    check.q5(search.chinchilla_optimal)
    assert capsys.readouterr().out.count("✓") == 28


def _no_end(bounds, n):
    return torch.tensor(list(itertools.product(*[torch.linspace(lo, hi, n + 1)[:-1].tolist() for lo, hi in bounds])))


def _first_fast(bounds, n):
    return torch.tensor([p[::-1] for p in itertools.product(*[torch.linspace(lo, hi, n).tolist() for lo, hi in bounds[::-1]])])


@pytest.mark.parametrize("func,message", [
    (_no_end, "high end of each range is missing"),
    (_first_fast, "FIRST dimension varies fastest"),
    (lambda b, n: torch.stack([torch.linspace(lo, hi, n) for lo, hi in b], 1), "zip"),
    (lambda b, n: grid(b, n) + 1, "is wrong"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("func,message", [
    (lambda m, v, b: ei(-m, v, -b), "MAXIMISING"),
    (lambda m, v, b: ei(m, v ** 2, b), "variance was used"),
    (lambda m, v, b: (b - m) * 0.5 * (1 + torch.erf((b - m) / v.sqrt() / math.sqrt(2))), "exploration term"),
    (lambda m, v, b: ei(m, v, b) - (b - m) * 0.5 * (1 + torch.erf((b - m) / v.sqrt() / math.sqrt(2))), "only the exploration"),
    (lambda m, v, b: (b - m).clamp_min(0), "without uncertainty"),
    (lambda m, v, b: ei(m, v, b) * 1.1, "is wrong"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@pytest.mark.parametrize("kwargs,message", [
    ({"invert": False}, "K\\^-1 is missing"),
    ({"two": 1.0}, "lacks the 2"),
    ({"ell_pow": 1}, "lengthscale was not squared"),
    ({"sq": 1}, "distance was not squared"),
    ({"with_noise": False}, "noise term"),
])
def test_q3_names_the_mistake(kwargs, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(lambda *a: gp_mean(*a, **kwargs))


def test_q3_wrong_shape_and_value():
    with pytest.raises(CheckFailure, match="one number"):
        check.q3(lambda x, y, xn, ell, noise: torch.zeros(3))
    with pytest.raises(CheckFailure, match="should be"):
        check.q3(lambda *a: gp_mean(*a) + 0.1)


@pytest.mark.parametrize("func,message", [
    (lambda n, L, E: (fit(n, L, E)[0], -fit(n, L, E)[1]), "wrong sign"),
    (lambda n, L, E: fit(n, L, E, subtract=False), "not subtracted"),
    (lambda n, L, E: (math.log(fit(n, L, E)[0]), fit(n, L, E)[1]), "log A"),
    (lambda n, L, E: (fit(n, L, E)[0] * 1.05, fit(n, L, E)[1]), "should be"),
    (lambda n, L, E: fit(n, L, E)[1], "tuple"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


@pytest.mark.parametrize("func,message", [
    (lambda C: chin(C, 40), "forward pass only"),
    (lambda C: chin(C, 20), "6 of C = 6 N D is missing"),
    (lambda C: chin(C)[::-1], "swapped"),
    (lambda C: (C / 120, 20 * C / 120), "no square root"),
    (lambda C: chin(C, 100), "expected"),
    (lambda C: chin(C)[0], "tuple"),
])
def test_q5_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)
