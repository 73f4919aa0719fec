"""Scaling-law fits of unit 09 against their published formulas and against data made from known laws."""
import math

import pytest
import torch

from llmcourse import search


def test_fit_log_line_recovers_a_power_law():
    x = torch.logspace(1, 6, 12, dtype=torch.float64)
    slope, prefactor = search.fit_log_line(x, 0.3 * x ** 0.73)
    assert slope == pytest.approx(0.73, abs=1e-9) and prefactor == pytest.approx(0.3, rel=1e-9)


def test_fit_log_line_refuses_non_positive_values():
    with pytest.raises(ValueError, match="positive"):
        search.fit_log_line([1, 2, 3], [1, 0, 2])


def test_isoflop_minimum_is_the_vertex_of_the_parabola_in_log_n():
    n = torch.logspace(2, 5, 7, dtype=torch.float64)
    loss = 2.0 + 0.1 * (n.log() - math.log(3e3)) ** 2
    n_opt, loss_opt = search.isoflop_minimum(n, loss)
    assert n_opt == pytest.approx(3e3, rel=1e-6) and loss_opt == pytest.approx(2.0, abs=1e-9)


def test_isoflop_minimum_refuses_a_curve_without_a_minimum():
    with pytest.raises(ValueError, match="bracket a minimum"):
        search.isoflop_minimum([1e2, 1e3, 1e4], [3.0, 2.5, 2.2])


def _chinchilla_grid():
    # Hoffmann et al.'s (2022) fitted constants: E 1.69, A 406.4, alpha 0.34, B 410.7, beta 0.28.
    n = torch.tensor([1e7, 3e7, 1e8, 3e8, 1e9], dtype=torch.float64).repeat(4)
    d = torch.tensor([1e8, 1e9, 1e10, 1e11], dtype=torch.float64).repeat_interleave(5)
    return n, d, search.loss_surface(n, d, 1.69, 406.4, 0.34, 410.7, 0.28)


def test_loss_surface_is_chinchillas_formula():
    assert float(search.loss_surface(70e9, 1.4e12, 1.69, 406.4, 0.34, 410.7, 0.28)) == pytest.approx(
        1.69 + 406.4 / 70e9 ** 0.34 + 410.7 / 1.4e12 ** 0.28, rel=1e-12)


def test_fit_loss_surface_recovers_known_parameters():
    n, d, loss = _chinchilla_grid()
    E, A, alpha, B, beta = search.fit_loss_surface(n, d, loss)
    assert E == pytest.approx(1.69, abs=0.02)
    assert alpha == pytest.approx(0.34, abs=0.005) and beta == pytest.approx(0.28, abs=0.005)
    fitted = search.loss_surface(n, d, E, A, alpha, B, beta)
    assert torch.allclose(fitted, loss, atol=1e-3)


def test_fit_loss_surface_with_a_fixed_E_keeps_it():
    n, d, loss = _chinchilla_grid()
    assert search.fit_loss_surface(n, d, loss, E=1.69)[0] == 1.69
    with pytest.raises(ValueError, match="fixed E"):
        search.fit_loss_surface(n, d, loss, E=float(loss.min()) + 0.1)


def test_fit_loss_surface_keeps_E_at_its_lower_bound_of_zero():
    n, d, _ = _chinchilla_grid()
    loss = search.loss_surface(n, d, -0.5, 406.4, 0.34, 410.7, 0.28) + 1.0   # a law whose best E is 0.5
    loss = loss - 0.9                                                         # ... pushed to want E = -0.4
    E = search.fit_loss_surface(n, d, loss)[0]
    assert E == 0.0


def test_compute_optimal_size_is_the_minimum_along_an_isoflop_line():
    A, alpha, B, beta = 406.4, 0.34, 410.7, 0.28
    for C in (1e20, 5.76e23):
        n = torch.logspace(7, 13, 60001, dtype=torch.float64)
        loss = search.loss_surface(n, C / (6 * n), 1.69, A, alpha, B, beta)
        n_star = float(n[loss.argmin()])
        assert float(search.compute_optimal_size(C, A, alpha, B, beta)) == pytest.approx(n_star, rel=1e-3)


def test_isoflop_minimum_refuses_a_curve_that_bends_down():
    with pytest.raises(ValueError, match="bracket a minimum"):
        search.isoflop_minimum([1e2, 1e3, 1e4], [3.0, 3.2, 3.0])
