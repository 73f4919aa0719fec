"""The unit 09 checks: they pass correct answers, fail the stub and name each classic mistake."""
import math

import pytest
import torch

from llmcourse import search
from llmcourse.checks import CheckFailure
from llmcourse.checks import sweet_spot as check


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


def unknown_E(fit_fn=None):
    fit_fn = fit_fn or fit
    n, loss = check.scaling_runs()

    def error(E):
        A, alpha = fit_fn(n, loss, E)
        return float(((E + A * n.pow(-alpha) - loss) ** 2).sum())
    best = min(check.e_grid().tolist(), key=error)
    return fit_fn(n, loss, best)[1], best


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 2, 11, 12):
        check.q1(ei, seed=seed)
        check.q2(gp_mean, seed=seed)
        check.q3(fit, seed=seed)
    check.q1(search.expected_improvement)
    alpha, E = unknown_E()
    check.q4(alpha, E, fit)
    check.q5(70e9 / search.chinchilla_optimal(1e21)[0])
    assert capsys.readouterr().out.count("✓") == 18


def test_the_grid_fit_is_close_to_the_librarys_fit():
    E, A, alpha = check.fit_unknown_E()
    lib_E, lib_A, lib_alpha = search.fit_power_law(*check.scaling_runs())
    assert abs(E - lib_E) < 0.01 and abs(alpha - lib_alpha) < 0.005


@pytest.mark.parametrize("func,message", [
    (lambda m, v, b: ei(-m, v, -b), "MAXIMISING"),
    (lambda m, v, b: ei(m, v ** 2, b), "variance was used"),
    (lambda m, v, b: (b - m) * 0.5 * (1 + torch.erf((b - m) / v.sqrt() / math.sqrt(2))), "exploration term"),
    (lambda m, v, b: ei(m, v, b) - (b - m) * 0.5 * (1 + torch.erf((b - m) / v.sqrt() / math.sqrt(2))), "only the exploration"),
    (lambda m, v, b: (b - m).clamp_min(0), "without uncertainty"),
    (lambda m, v, b: ei(m, v, b) * 1.1, "is wrong"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("kwargs,message", [
    ({"invert": False}, "K\\^-1 is missing"),
    ({"two": 1.0}, "lacks the 2"),
    ({"ell_pow": 1}, "lengthscale was not squared"),
    ({"sq": 1}, "distance was not squared"),
    ({"with_noise": False}, "noise term"),
])
def test_q2_names_the_mistake(kwargs, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a: gp_mean(*a, **kwargs))


def test_q2_wrong_shape_and_value():
    with pytest.raises(CheckFailure, match="one number"):
        check.q2(lambda x, y, xn, ell, noise: torch.zeros(3))
    with pytest.raises(CheckFailure, match="should be"):
        check.q2(lambda *a: gp_mean(*a) + 0.1)


@pytest.mark.parametrize("func,message", [
    (lambda n, L, E: (fit(n, L, E)[0], -fit(n, L, E)[1]), "wrong sign"),
    (lambda n, L, E: fit(n, L, E, subtract=False), "not subtracted"),
    (lambda n, L, E: (math.log(fit(n, L, E)[0]), fit(n, L, E)[1]), "log A"),
    (lambda n, L, E: (fit(n, L, E)[0] * 1.05, fit(n, L, E)[1]), "should be"),
    (lambda n, L, E: fit(n, L, E)[1], "tuple"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q4_q5_compare_with_their_own_run():
    alpha, E = unknown_E()
    with pytest.raises(CheckFailure, match="your `fit_given_E` from q3 is not right yet"):
        check.q4(alpha, E, lambda n, L, E_: fit(n, L, E_, subtract=False))
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None, None, fit)
    n, loss = check.scaling_runs()
    with pytest.raises(CheckFailure, match="irreducible loss was not fitted"):
        check.q4(fit(n, loss, 0.0)[1], E, fit)
    with pytest.raises(CheckFailure, match="E_fitted"):
        check.q4(alpha, E + 0.05, fit)
    optimal = math.sqrt(1e21 / 120)
    with pytest.raises(CheckFailure, match="inverse"):
        check.q5(optimal / 70e9)
    with pytest.raises(CheckFailure, match="forward pass only"):
        check.q5(70e9 / math.sqrt(1e21 / 40))
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q5(None)
