"""search.py against direct formulas: grids, the GP posterior, expected improvement, power-law fits."""
import math

import pytest
import torch

from llmcourse import search


def test_grid_points_is_every_combination():
    pts = search.grid_points([(0, 1), (10, 20)], 3)
    assert pts.shape == (9, 2)
    assert set(map(tuple, pts.tolist())) == {(a, b) for a in (0, 0.5, 1) for b in (10, 15, 20)}
    assert pts[:3, 0].tolist() == [0, 0, 0]  # last dimension varies fastest
    assert search.grid_points([(2, 4)], 1).tolist() == [[3.0]]


def test_random_points_inside_bounds_and_seeded():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = search.random_points([(-1, 1), (5, 6)], 500, g())
    assert a.shape == (500, 2)
    assert (a[:, 0] >= -1).all() and (a[:, 0] < 1).all() and (a[:, 1] >= 5).all() and (a[:, 1] < 6).all()
    assert torch.equal(a, search.random_points([(-1, 1), (5, 6)], 500, g()))
    assert len(set(a[:, 0].tolist())) == 500  # unlike a grid, every value distinct


@pytest.mark.parametrize("bounds", [[], [(1, 0)], [(0, float("inf"))], ["ab"]])
def test_bad_bounds(bounds):
    with pytest.raises(ValueError, match="bounds"):
        search.grid_points(bounds, 2)


def test_bad_counts():
    with pytest.raises(ValueError, match="n_per_dim"):
        search.grid_points([(0, 1)], 0)
    with pytest.raises(ValueError, match="n_trials"):
        search.random_search(lambda x: 0.0, [(0, 1)], n_trials=0)


def test_searches_record_trials_in_order():
    f = lambda x: float(((x - 0.3) ** 2).sum())  # noqa: E731
    r = search.random_search(f, [(0, 1), (0, 1)], n_trials=20, seed=1)
    assert torch.allclose(r.ys, torch.tensor([f(x) for x in r.xs], dtype=torch.float64))
    assert torch.equal(r.best_so_far(), torch.tensor([min(r.ys[: i + 1].tolist()) for i in range(20)], dtype=torch.float64))
    assert r.best_y == min(r.ys.tolist())
    assert search.grid_search(f, [(0, 1)], 5).xs.shape == (5, 1)


def test_non_finite_objective_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        search.random_search(lambda x: float("nan"), [(0, 1)], n_trials=2)


def test_rbf_kernel_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 2, generator=g, dtype=torch.float64), torch.rand(3, 2, generator=g, dtype=torch.float64)
    k = search.rbf_kernel(a, b, lengthscale=0.3, variance=2.0)
    for i in range(4):
        for j in range(3):
            assert math.isclose(k[i, j], 2.0 * math.exp(-float(((a[i] - b[j]) ** 2).sum()) / (2 * 0.09)), rel_tol=1e-12)
    with pytest.raises(ValueError, match="lengthscale"):
        search.rbf_kernel(a, b, lengthscale=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gp_posterior_matches_matrix_inverse(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(7, 2, generator=g, dtype=torch.float64)
    y = torch.randn(7, generator=g, dtype=torch.float64)
    xt = torch.rand(5, 2, generator=g, dtype=torch.float64)
    ell, var, noise = 0.4, 1.5, 1e-3
    K = search.rbf_kernel(x, x, ell, var) + noise * torch.eye(7, dtype=torch.float64)
    ks = search.rbf_kernel(x, xt, ell, var)
    Kinv = torch.linalg.inv(K)
    mean_ref = ks.T @ Kinv @ y
    var_ref = var - torch.diagonal(ks.T @ Kinv @ ks)
    mean, v = search.gp_posterior(x, y, xt, lengthscale=ell, variance=var, noise=noise)
    assert torch.allclose(mean, mean_ref, atol=1e-9) and torch.allclose(v, var_ref, atol=1e-9)


def test_gp_interpolates_its_trials_and_forgets_far_away():
    x = torch.tensor([[0.1], [0.5], [0.9]], dtype=torch.float64)
    y = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    mean, var = search.gp_posterior(x, y, x, lengthscale=0.2, noise=1e-9)
    assert torch.allclose(mean, y, atol=1e-5) and (var < 1e-5).all()
    mean, var = search.gp_posterior(x, y, torch.tensor([[50.0]], dtype=torch.float64), lengthscale=0.2)
    assert abs(float(mean)) < 1e-9 and math.isclose(float(var), 1.0, rel_tol=1e-9)  # back to the prior


def test_gp_marginal_likelihood_matches_formula():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 1, generator=g, dtype=torch.float64)
    y = torch.sin(6 * x[:, 0])
    K = search.rbf_kernel(x, x, 0.3) + 1e-4 * torch.eye(6, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(torch.zeros(6, dtype=torch.float64), K).log_prob(y)
    assert math.isclose(search.gp_log_marginal_likelihood(x, y, lengthscale=0.3, noise=1e-4), float(ref), rel_tol=1e-9)


def test_normal_cdf_and_pdf_match_torch_distributions():
    z = torch.linspace(-5, 5, 101, dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0)
    assert torch.allclose(search.normal_cdf(z), normal.cdf(z), atol=1e-12)
    assert torch.allclose(search.normal_pdf(z), normal.log_prob(z).exp(), atol=1e-12)


def test_expected_improvement_closed_form_and_monte_carlo():
    mean = torch.tensor([0.0, 1.0, -1.0, 0.3], dtype=torch.float64)
    var = torch.tensor([1.0, 0.25, 4.0, 0.01], dtype=torch.float64)
    ei = search.expected_improvement(mean, var, best=0.2)
    s = var.sqrt()
    z = (0.2 - mean) / s
    closed = (0.2 - mean) * 0.5 * (1 + torch.erf(z / math.sqrt(2))) + s * torch.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    assert torch.allclose(ei, closed, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    samples = mean + s * torch.randn(400_000, 4, generator=g, dtype=torch.float64)
    mc = (0.2 - samples).clamp_min(0).mean(0)
    assert torch.allclose(ei, mc, atol=5e-3)
    assert math.isclose(float(search.expected_improvement(torch.zeros(1), torch.ones(1), 0.0)), 1 / math.sqrt(2 * math.pi), rel_tol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        search.expected_improvement(torch.zeros(2), torch.ones(3), 0.0)


def test_bayesian_optimisation_finds_the_minimum_of_a_smooth_bowl():
    f = lambda x: float(((x - torch.tensor([0.7, -0.4], dtype=torch.float64)) ** 2).sum())  # noqa: E731
    bo = search.bayesian_optimisation(f, [(-1, 1), (-1, 1)], n_trials=20, n_init=4, seed=0)
    rnd = search.random_search(f, [(-1, 1), (-1, 1)], n_trials=20, seed=0)
    assert bo.xs.shape == (20, 2)
    assert bo.best_y < 1e-2
    assert bo.best_y < rnd.best_y


def test_power_law_fit_recovers_known_parameters():
    n = [1e3, 3e3, 1e4, 3e4, 1e5, 1e6]
    for E, A, alpha in [(1.5, 20.0, 0.3), (0.2, 5.0, 0.5), (2.0, 100.0, 0.25)]:
        e, a, al = search.fit_power_law(n, search.power_law(n, E, A, alpha))
        assert math.isclose(e, E, abs_tol=1e-4) and math.isclose(a, A, rel_tol=1e-3) and math.isclose(al, alpha, rel_tol=1e-3)


def test_power_law_fit_with_noise_is_close():
    g = torch.Generator().manual_seed(0)
    n = torch.logspace(3, 6, 8, dtype=torch.float64)
    loss = search.power_law(n, 1.2, 30.0, 0.35) * (1 + 0.002 * torch.randn(8, generator=g, dtype=torch.float64))
    e, a, al = search.fit_power_law(n, loss)
    assert abs(e - 1.2) < 0.1 and abs(al - 0.35) < 0.1
    assert abs(float(search.power_law(1e7, e, a, al)) - float(search.power_law(1e7, 1.2, 30.0, 0.35))) < 0.05


def test_power_law_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        search.fit_power_law([1, 2], [3, 2])
    with pytest.raises(ValueError, match="positive"):
        search.fit_power_law([1, -2, 3], [3, 2, 1])


def test_chinchilla_optimal():
    n, d = search.chinchilla_optimal(5.76e23)
    assert math.isclose(6 * n * d, 5.76e23, rel_tol=1e-12) and math.isclose(d / n, 20.0)
    assert 6.5e10 < n < 7.5e10
    n, d = search.chinchilla_optimal(6e5, tokens_per_parameter=10)
    assert math.isclose(n, 100.0) and math.isclose(d, 1000.0)
    with pytest.raises(ValueError, match="compute_flops"):
        search.chinchilla_optimal(0)
