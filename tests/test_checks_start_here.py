"""The unit 00 checks: they pass correct answers and name the classic mistakes."""
import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import start_here as check
from llmcourse.checks.core import compare, hint_giver, measured, requires


def good_softmax(z):
    e = (z - z.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def good_temperature_probs(logits, temperature):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return good_softmax(logits / temperature)


def good_sample_tokens(probs, n, generator):
    u = torch.rand(n, generator=generator, dtype=probs.dtype)
    return torch.searchsorted(probs.cumsum(0), u, right=True).clamp(max=len(probs) - 1)


def multinomial_sample_tokens(probs, n, generator):
    return torch.multinomial(probs, n, replacement=True, generator=generator)


def test_correct_answers_pass(capsys):
    for seed in (0, 11, 12):
        check.q1(good_temperature_probs, seed=seed)
        check.q2(good_softmax, seed=seed)
        check.q3(good_sample_tokens, seed=seed)
        check.q3(multinomial_sample_tokens, seed=seed)
    check.q4(0.3, good_temperature_probs, good_sample_tokens)
    check.q5("the uniform distribution")
    assert capsys.readouterr().out.count("✓") == 14


@pytest.mark.parametrize("func,message", [
    (lambda z, t: good_temperature_probs(z * t, 1.0) if t else good_temperature_probs(z, 0), "multiplied the logits"),
    (lambda z, t: good_softmax(z) if t else good_temperature_probs(z, 0), "ignored the temperature"),
    (lambda z, t: torch.softmax(z / t, dim=0), r"wrong axis \(dim 0\)"),
    (lambda z, t: (z / t).exp() / (z / t).exp().sum(-1, keepdim=True) if t else good_temperature_probs(z, 0),
     "(?s)NaN .*subtract each row's maximum"),
    (lambda z, t: torch.softmax(z / t, dim=-1), "(?s)temperature_probs\\(logits, 0.0\\).*treat 0 on its own"),
    (lambda z, t: torch.softmax(z.div_(t), dim=-1) if t else good_temperature_probs(z, 0), "changed the logits"),
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
    (lambda z: z.sub_(z.amax(-1, keepdim=True)).exp() / z.exp().sum(-1, keepdim=True), "changed its input"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


def searchsorted_left_shifted(probs, n, generator):
    return (good_sample_tokens(probs, n, generator) + 1) % len(probs)


@pytest.mark.parametrize("func,message", [
    (lambda p, n, g: torch.multinomial(p, n, replacement=True), "generators seeded alike gave different"),
    (searchsorted_left_shifted, "off-by-one"),
    (lambda p, n, g: torch.randint(len(p), (n,), generator=g), "probabilities were not used"),
    (lambda p, n, g: torch.searchsorted(p.cumsum(0), torch.rand(n, generator=g, dtype=p.dtype) * 1.5),
     "outside 0 .. 5"),
    (lambda p, n, g: good_sample_tokens(p, n, g).double(), "dtype torch.float64"),
    (lambda p, n, g: good_sample_tokens(p, n, g)[:-1], r"shape \(20000,\)"),
    (lambda p, n, g: torch.searchsorted(p.flip(0).cumsum(0), torch.rand(n, generator=g, dtype=p.dtype)).clamp(max=5),
     "shares of the tokens"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


@pytest.mark.parametrize("answer,message", [
    (None, "not answered yet"),
    (0.2, "lowest temperature that reaches 90%"),
    (0.45, "only about 84%"),
    (0.35, "should be one of TEMPERATURES"),
    ("0.3", "should be one of TEMPERATURES"),
])
def test_q4_names_the_mistake(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(answer, good_temperature_probs, good_sample_tokens)


def test_q4_blames_the_earlier_question():
    with pytest.raises(CheckFailure, match="(?s)^q4: this fails because your `sample_tokens` from q3.*q3: "):
        check.q4(0.3, good_temperature_probs, searchsorted_left_shifted)
    with pytest.raises(CheckFailure, match="(?s)^q4: this fails because your `temperature_probs` from q1"):
        check.q4(0.3, lambda z, t: good_softmax(z), good_sample_tokens)


@pytest.mark.parametrize("answer,message", [
    (None, "not answered yet"),
    ("the greedy token", "temperature going down to 0"),
    ("uniform", "should be one of"),
])
def test_q5_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(answer)


def test_hints_come_one_step_at_a_time(capsys):
    hint = hint_giver({"q1": ("first", "second")})
    hint("q1"), hint("q1"), hint("q1"), hint("q1", 1), hint("q7")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Hint 1 of 2 for q1: first" and lines[1] == "Hint 2 of 2 for q1: second"
    assert lines[2].startswith("No more hints for q1") and lines[3] == "Hint 1 of 2 for q1: first"
    assert "no hints for 'q7'" in lines[4]
    with pytest.raises(TypeError, match="tuple of non-empty strings"):
        hint_giver({"q1": "a single string"})


def test_measured_and_requires_say_what_went_wrong():
    with pytest.raises(CheckFailure, match=r"`loss` = 2.5, but the check's own run of this experiment gives 2; the tolerance is ±0.1"):
        measured("q9", 2.5, 2.0, tolerance=0.1, name="loss")
    with pytest.raises(CheckFailure, match="looks like the result of a classic mistake: used bits"):
        measured("q9", 2.0 / 0.6931, 2.0, tolerance=0.01, name="loss", mistakes=[("used bits", 2.0 / 0.6931)])
    with pytest.raises(CheckFailure, match="should be a number"):
        measured("q9", "2.0", 2.0, tolerance=0.1, name="loss")
    measured("q9", torch.tensor(2.05), 2.0, tolerance=0.1, name="loss")

    def failing_earlier_check():
        raise CheckFailure("q1: wrong")
    with pytest.raises(CheckFailure, match="^q3: this fails because your `f` from q1 is not right yet"):
        requires("q3", "q1", "f", failing_earlier_check)


def test_crash_and_non_function_are_reported_with_the_question():
    with pytest.raises(CheckFailure, match=r"q1: <lambda> raised ZeroDivisionError"):
        check.q1(lambda z, t: 1 / 0)
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
