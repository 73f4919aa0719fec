"""The unit 00 checks: they pass correct answers and name the classic mistakes."""
import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import start_here as check
from llmcourse.checks.core import compare


def good_softmax(z):
    e = (z - z.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def test_correct_answers_pass(capsys):
    check.q1(lambda: (4, 10, 16))
    check.q1(lambda: torch.Size([4, 10, 16]))
    for seed in (0, 11, 12):
        check.q2(good_softmax, seed=seed)
    check.q3(lambda c: c.float() / c.sum(-1, keepdim=True))
    check.q4(lambda p, v: (v[int(p.argmax())], p.max()))
    assert capsys.readouterr().out.count("✓") == 7


@pytest.mark.parametrize("func,message", [
    (lambda: (10, 4, 16), "time before batch"),
    (lambda: (4, 16, 10), "channels before time"),
    (lambda: (4, 10), r"should be \(4, 10, 16\), got \(4, 10\)"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("func,message", [
    (lambda z: z.exp() / z.exp().sum(0, keepdim=True), r"wrong axis \(dim 0\)"),
    (lambda z: z.exp() / z.exp().sum(), "normalised over the whole tensor"),
    (lambda z: z / z.sum(-1, keepdim=True), "without exponentiating"),
    (lambda z: z.exp() / z.exp().sum(-1, keepdim=True), "(?s)NaN .*subtract each row's maximum"),
    (lambda z: z.exp().sum(-1), r"has shape \(2,\), expected \(2, 4\)"),
    (lambda z: z.sub_(z.amax(-1, keepdim=True)).exp() / z.exp().sum(-1, keepdim=True) * 1.1, "differ; first at index"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


@pytest.mark.parametrize("func,message", [
    (lambda c: c // c.sum(-1, keepdim=True), "integer division"),
    (lambda c: c / c.amax(-1, keepdim=True), "largest count"),
    (lambda c: c / c.sum(0, keepdim=True), "wrong axis"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q4_catches_index_instead_of_token_and_argmin():
    with pytest.raises(CheckFailure, match="the index"):
        check.q4(lambda p, v: (int(p.argmax()), float(p.max())))
    with pytest.raises(CheckFailure, match="argmin instead of argmax"):
        check.q4(lambda p, v: (v[int(p.argmin())], float(p.min())))


def test_stub_and_crash_are_reported_with_the_question():
    def stub():
        raise NotImplementedError("return a tuple")

    with pytest.raises(CheckFailure, match=r"^q1: batch_shape is not implemented yet|^q1: stub is not implemented yet"):
        check.q1(stub)
    with pytest.raises(CheckFailure, match=r"q2: <lambda> raised ZeroDivisionError"):
        check.q2(lambda z: 1 / 0)
    with pytest.raises(CheckFailure, match="expected a function"):
        check.q2(torch.zeros(3))


def test_compare_reports_dtype_nan_and_first_mismatch():
    expected = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    with pytest.raises(CheckFailure, match="dtype torch.int64, expected a floating-point"):
        compare("qx", torch.zeros(2, 2, dtype=torch.long), expected)
    with pytest.raises(CheckFailure, match="contains 1 NaN and 1 infinite"):
        compare("qx", torch.tensor([[float("nan"), 0.5], [float("inf"), 0.75]]), expected)
    with pytest.raises(CheckFailure, match=r"1 of 4 values differ; first at index \(1, 0\): expected 0.25, got 0.3"):
        compare("qx", torch.tensor([[0.5, 0.5], [0.3, 0.75]]), expected)
    compare("qx", expected + 1e-8, expected)  # within tolerance: passes silently
