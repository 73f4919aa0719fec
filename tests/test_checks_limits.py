"""The unit 15 checks: they pass correct answers, fail the stub and name each classic mistake."""
import math

import pytest
import torch

from llmcourse import interpret
from llmcourse.checks import CheckFailure
from llmcourse.checks import limits as check


def table(conf, correct, n_bins, *, rounding=False, zeros=False):
    b = ((conf * n_bins).round() if rounding else (conf * n_bins).floor()).long().clamp(0, n_bins - 1)
    rows = []
    for k in range(n_bins):
        m = b == k
        n = int(m.sum())
        empty = 0.0 if zeros else math.nan
        rows.append([n, conf[m].double().mean().item(), correct[m].double().mean().item()] if n else [0, empty, empty])
    return torch.tensor(rows, dtype=torch.float64)


def ece(conf, correct, n_bins, *, weighted=True, absolute=True, skip_empty=True):
    t = table(conf, correct, n_bins)
    keep = t[:, 0] > 0 if skip_empty else torch.ones(n_bins, dtype=torch.bool)
    gap = t[keep, 2] - t[keep, 1]
    gap = gap.abs() if absolute else gap
    w = t[keep, 0] / t[:, 0].sum() if weighted else torch.full_like(gap, 1 / len(gap))
    return float((w * gap).sum())


def measure():
    conf, correct = check.confidences(*check.calibration_slice())
    conf_s, correct_s = check.confidences(*check.shuffled_slice())
    return ece(conf, correct, check.N_BINS), float(conf_s.mean() - correct_s.double().mean())


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(table, seed=seed)
        check.q2(ece, table, seed=seed)
    check.q2(lambda c, r, n: interpret.expected_calibration_error(c, r, n), table)
    value, gap = measure()
    check.q3(value, ece, table)
    check.q4(gap)
    assert capsys.readouterr().out.count("✓") == 11
    assert gap > 0.05                              # the finding: overconfident on shuffled words


def test_the_models_confidences_are_the_library_ones():
    x, y = check.calibration_slice()
    model, _ = check.shipped_model()
    with torch.no_grad():
        logits = model(x)[0]
    conf, _, correct = interpret.top1_confidence(logits[:, check.SKIP:], y[:, check.SKIP:])
    mine, mine_correct = check.confidences(x, y)
    assert torch.allclose(conf.double().flatten(), mine.float().double(), atol=1e-6)
    assert torch.equal(correct.flatten(), mine_correct)


@pytest.mark.parametrize("kw,message", [
    ({"rounding": True}, "rounded"),
    ({"zeros": True}, "0 instead of NaN"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *a: table(*a, **kw))


@pytest.mark.parametrize("kw,message", [
    ({"weighted": False}, "unweighted mean"),
    ({"absolute": False}, "absolute value"),
    ({"skip_empty": False}, "NaN"),
])
def test_q2_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a: ece(*a, **kw), table)


def test_q2_blames_the_table_from_q1():
    with pytest.raises(CheckFailure, match="your `reliability_table` from q1 is not right yet"):
        check.q2(ece, lambda *a: table(*a, rounding=True))


def test_q3_q4_compare_with_their_own_run():
    value, gap = measure()
    with pytest.raises(CheckFailure, match="your `expected_calibration_error` from q2 is not right yet"):
        check.q3(value, lambda *a: ece(*a, weighted=False), table)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None, ece, table)
    with pytest.raises(CheckFailure, match="tolerance"):
        check.q3(value + 0.01, ece, table)
    with pytest.raises(CheckFailure, match="sign is flipped"):
        check.q4(-gap)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None)
