import pytest
import torch

from llmcourse import context
from llmcourse.checks import context as check
from llmcourse.checks.core import CheckFailure


@pytest.mark.parametrize("seed", [0, 11])
def test_correct_answers_pass(seed, capsys):
    check.q1(context.attention_flops, seed=seed)
    check.q2(lambda L, T, d, b: context.kv_cache_bytes(L, T, d, b), seed=seed)
    check.q3(context.crossover_length, seed=seed)
    check.q4(context.few_shot_prompt, seed=seed)
    check.q5(context.accuracy_by_position, seed=seed)
    out = capsys.readouterr().out
    assert all(f"✓ q{i} passed" in out for i in range(1, 6))


@pytest.mark.parametrize("q, wrong, message", [
    ("q1", lambda T, d: 2 * T * T * d, "counted only Q K^T"),
    ("q1", lambda T, d: 4 * T * d * d, "T d^2 instead of T^2 d"),
    ("q2", lambda L, T, d, b: L * T * d * b, "keys AND the values"),
    ("q2", lambda L, T, d, b: 2 * T * d * b, "forgot the layers"),
    ("q2", lambda L, T, d, b: 2 * L * T * d, "forgot dtype_bytes"),
    ("q2", lambda L, T, d, b: 16 * L * T * d * b, "8 bits per byte"),
    ("q3", lambda d: d / 6, "d / 6"),
    ("q3", lambda d: 24 * d, "24 d"),
    ("q3", lambda d: 6.0 * d, "return an int"),
    ("q4", lambda ex, q: context.few_shot_prompt(ex, q) + " ", "trailing space"),
    ("q4", lambda ex, q: context.few_shot_prompt(ex, q)[:-2], "left out the final 'A:'"),
    ("q4", lambda ex, q: "".join(f"Q: {a}\nA: {b}\n\n" for a, b in ex) + f"Q: {q}\nA:", "blank line"),
    ("q5", lambda p, t: (p == t).float().mean(1), "dim 1"),
    ("q5", lambda p, t: (p == t).float().sum(0), "divide by the batch size"),
    ("q5", lambda p, t: (p == t).float().mean(), "one overall accuracy"),
])
def test_classic_mistakes_are_named(q, wrong, message):
    with pytest.raises(CheckFailure, match=q) as info:
        getattr(check, q)(wrong)
    assert message in str(info.value)


def test_stub_and_crash_are_explained():
    def stub(*args):
        raise NotImplementedError("write it")

    with pytest.raises(CheckFailure, match="not implemented"):
        check.q1(stub)
    with pytest.raises(CheckFailure, match="ZeroDivisionError"):
        check.q3(lambda d: 1 / 0)
    with pytest.raises(CheckFailure, match="q5"):
        check.q5(lambda p, t: torch.zeros(3))
