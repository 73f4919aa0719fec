"""The unit 10 checks: they pass correct answers, fail the stub and name each classic mistake."""
import math

import pytest
import torch

from llmcourse import sampling
from llmcourse.checks import CheckFailure
from llmcourse.checks import inference as check


def top_p(probs, p, *, rule="before", renormalise=True, descending=True):
    sorted_p, order = probs.sort(descending=descending)
    cum = sorted_p.cumsum(0)
    keep = {"before": cum - sorted_p < p, "le": cum <= p, "lt": cum < p}[rule]
    if rule == "before":
        keep[0] = True
    kept = torch.zeros_like(probs).scatter(0, order, sorted_p * keep)
    return kept / kept.sum() if renormalise else kept


def next_probs(z, counts, *, temperature, top_k, top_p, presence_penalty, frequency_penalty, penalties=True,
               swap_order=False, unseen=False):
    c = counts.to(z.dtype)
    if penalties:
        z = z - c * frequency_penalty - (1.0 if unseen else (c > 0).to(z.dtype)) * presence_penalty
    z = z / temperature
    kth = torch.topk(z, top_k).values[-1]
    z = z.masked_fill(z < kth, -math.inf)
    probs = torch.softmax(z, -1)
    return probs if swap_order else globals()["top_p"](probs, top_p)


def test_reference_sampler_agrees_with_the_library():
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        z = torch.randn(20, generator=g, dtype=torch.float64) * 2
        counts = torch.randint(0, 3, (20,), generator=g)
        s = dict(temperature=0.7, top_k=9, top_p=0.8, presence_penalty=0.4, frequency_penalty=0.2)
        assert torch.allclose(check.reference_next_token_probs(z, counts, **s),
                              sampling.next_token_distribution(z, counts, **s))


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 13):
        check.q1(top_p, seed=seed)
        check.q2(next_probs, top_p, seed=seed)
    check.q3(0.16, next_probs, top_p)
    check.q4(0.4)
    assert capsys.readouterr().out.count("✓") == 10


@pytest.mark.parametrize("kw,message", [
    ({"rule": "le"}, "crosses p"),
    ({"renormalise": False}, "forgot to renormalise"),
    ({"descending": False}, "least likely"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda probs, p: top_p(probs, p, **kw))


def test_q1_empty_nucleus_and_wrong_positions():
    with pytest.raises(CheckFailure, match="all NaN"):
        check.q1(lambda probs, p: top_p(probs, p, rule="lt"))

    def unsorted_positions(probs, p):
        sorted_p, _ = probs.sort(descending=True)
        keep = (sorted_p.cumsum(0) - sorted_p) < p
        kept = sorted_p * keep
        return kept / kept.sum()
    with pytest.raises(CheckFailure, match="wrong positions"):
        check.q1(unsorted_positions)


@pytest.mark.parametrize("kw,message", [
    ({"penalties": False}, "forgot the penalties"),
    ({"unseen": True}, "never seen"),
    ({"swap_order": True}, "is wrong"),
])
def test_q2_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a, **s: next_probs(*a, **s, **kw), top_p)


def test_q2_more_mistakes():
    def no_temperature(z, counts, **s):
        return next_probs(z, counts, **(s | {"temperature": 1.0}))

    def penalties_after_temperature(z, counts, **s):
        t = s["temperature"]
        return next_probs(z / t + 0 * counts, counts, **(s | {"temperature": 1.0}))
    with pytest.raises(CheckFailure, match="forgot the temperature"):
        check.q2(no_temperature, top_p)
    with pytest.raises(CheckFailure, match="after the temperature"):
        check.q2(penalties_after_temperature, top_p)


def test_q2_blames_top_p_from_q1():
    with pytest.raises(CheckFailure, match="your `top_p_filter` from q1 is not right yet"):
        check.q2(next_probs, lambda probs, p: top_p(probs, p, renormalise=False))


def test_q3_and_q4_compare_with_their_own_run():
    with pytest.raises(CheckFailure, match="your `next_token_probs` from q2 is not right yet"):
        check.q3(0.16, lambda *a, **s: next_probs(*a, **s, penalties=False), top_p)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None, next_probs, top_p)
    with pytest.raises(CheckFailure, match="higher temperature than your 0.12"):
        check.q3(0.12, next_probs, top_p)
    with pytest.raises(CheckFailure, match="check's sample is"):
        check.q3(0.2, next_probs, top_p)
    with pytest.raises(CheckFailure, match="not one of TEMPERATURES"):
        check.q3(0.5, next_probs, top_p)
    with pytest.raises(CheckFailure, match="smallest temperature"):
        check.q4(0.1)
    with pytest.raises(CheckFailure, match="one step too far"):
        check.q4(0.5)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None)


def test_sample_token_is_an_inverse_cdf_draw():
    probs = torch.tensor([0.5, 0.25, 0.25])
    draws = [check.sample_token(probs, torch.Generator().manual_seed(s)) for s in range(400)]
    assert abs(draws.count(0) / 400 - 0.5) < 0.08 and set(draws) == {0, 1, 2}
    one_hot = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert all(check.sample_token(one_hot, torch.Generator().manual_seed(s)) == 1 for s in range(50))


def test_q3_accepts_a_tensor_or_a_rounded_float():
    check.q3(torch.tensor(0.16), next_probs, top_p)
    check.q3(0.16000000000001, next_probs, top_p)
