"""Checks for exercises/15_limits.ipynb: the reliability table, the expected calibration error, and the
calibration of the course's shipped model on a slice of text.

The build checks call the student's functions on seeded inputs (the hidden tests use other seeds),
compare with `llmcourse.interpret` (itself tested against direct formulas) and name the classic
mistakes: rounding confidences to the nearest bin, NaN from empty bins, an unweighted mean over
bins, a signed gap. The experiment checks run the shipped model themselves.
"""
from __future__ import annotations

import functools
import math

import torch

from llmcourse import interpret
from llmcourse.checks.core import _close, answered, call, compare, fail, hint_giver, measured, passed, requires


QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("Give every prediction a bin number from its confidence, then summarise each bin separately.",
           "The bin number is the floor of confidence x n_bins, as an integer, clamped so that a confidence of "
           "exactly 1.0 lands in the last bin. For each bin: a mask of its members, their count, mean "
           "confidence and mean of `correct` as floats; NaN for the means of an empty bin.",
           "b = (conf * n_bins).floor().long().clamp(0, n_bins - 1); loop k over range(n_bins): members = b == k; "
           "rows.append([count, mean conf, mean correct] or [0, nan, nan]); return a float64 tensor of the rows."),
    "q2": ("Use your reliability table: the ECE is a weighted average, over the bins, of how far accuracy is "
           "from confidence.",
           "Weight each bin by its share of the predictions (count / total). Skip empty bins: their NaN would "
           "poison the sum (NaN x 0 is NaN). Take the absolute gap.",
           "table = reliability_table(...); keep = table[:, 0] > 0; sum of (counts / total) x |accuracy - "
           "confidence| over the kept rows, as a float."),
    "q3": ("Run the model on the windows, and for every position take the probability of its most likely "
           "character (the confidence) and whether that character is the true next one.",
           "With torch.no_grad(): logits = model(x)[0]; probs = softmax over the last axis; confidence, "
           "prediction = probs.max(-1); correct = prediction == y; drop the first SKIP positions of every window.",
           "Flatten conf and correct over windows and positions, then expected_calibration_error(conf, "
           "correct, N_BINS) with your q2."),
    "q4": ("Compare the two printed rows: how much more sure is the model than right, on shuffled words?",
           "Overconfidence = mean confidence minus accuracy (a positive number when the model is too sure).",
           "conf_shuffled.mean() - correct_shuffled.double().mean(), as a float."),
}
hint = hint_giver(HINTS)


def _calibration_data(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidences in [0, 1] (including exactly 1.0) and whether each prediction was right."""
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64) ** 0.5          # more weight near 1
    conf = torch.cat([conf, torch.tensor([1.0, 0.999, 0.02], dtype=torch.float64)])
    conf = conf[(conf < 0.15) | (conf >= 0.45)]                            # a gap: some bins stay empty
    right = torch.rand(conf.shape, generator=g, dtype=torch.float64) < conf ** 1.5  # overconfident
    return conf, right


def _nan_safe(x):
    """NaN -> -1 so that two tables with NaN in the same places compare equal."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return torch.nan_to_num(x.double(), nan=-1.0)
    return x


def q1(reliability_table, seed: int = 0) -> None:
    """(n_bins, 3) table: count, mean confidence, accuracy per equal-width bin; NaN in empty bins."""
    conf, right = _calibration_data(seed)
    n_bins = 10 + seed % 3
    got = call("q1", reliability_table, conf.clone(), right.clone(), n_bins)
    bins = interpret.reliability_bins(conf, right, n_bins)
    expected = torch.stack([bins.counts, bins.confidence, bins.accuracy], dim=1)
    rounded = (conf * n_bins).round().long().clamp(0, n_bins - 1)
    r_counts, r_conf, r_acc = _table(conf, right, rounded, n_bins)
    mistakes = [
        ("swapped the columns: column 1 is the mean confidence, column 2 the accuracy",
         _nan_safe(torch.stack([bins.counts, bins.accuracy, bins.confidence], 1))),
        ("rounded confidence * n_bins to the nearest bin; the bin of c is floor(c * n_bins) "
         "(and c = 1.0 goes in the last bin)", _nan_safe(torch.stack([r_counts, r_conf, r_acc], 1))),
        ("put 0 instead of NaN in empty bins", torch.nan_to_num(expected, nan=0.0)),
    ]
    for description, wrong in mistakes:
        if _close(_nan_safe(got), wrong, 1e-5, 1e-6):
            fail("q1", f"your table looks like the result of a classic mistake: {description}.")
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
        if not torch.equal(torch.isnan(got), torch.isnan(expected)):
            fail("q1", f"NaN in the wrong places: expected NaN only in the confidence and accuracy of empty bins "
                       f"(rows {torch.isnan(expected[:, 1]).nonzero().flatten().tolist()}), got NaN at "
                       f"{torch.isnan(got).nonzero().tolist()[:6]}.",
                 "an empty bin has no mean: put NaN there, and only there")
    compare("q1", _nan_safe(got), _nan_safe(expected), name=f"reliability_table(conf, correct, {n_bins})",
            hint="the bin of a confidence is the floor of confidence times n_bins, the last bin also takes 1.0; "
                 "then per bin: how many, their mean confidence, the fraction correct")
    passed("q1", f"{n_bins} bins: counts, mean confidence and accuracy match")


def _table(conf, right, idx, n_bins):
    counts = torch.bincount(idx, minlength=n_bins).double()
    mean = lambda v: torch.where(counts > 0, torch.bincount(idx, weights=v, minlength=n_bins) / counts.clamp_min(1),
                                 torch.full_like(counts, math.nan))
    return counts, mean(conf), mean(right.double())


def q2(expected_calibration_error, reliability_table, seed: int = 0) -> None:
    """expected_calibration_error(conf, correct, n_bins) = sum_b (n_b / N) |acc_b - conf_b|, from the table."""
    requires("q2", "q1", "reliability_table", lambda: q1(reliability_table, seed=seed))
    conf, right = _calibration_data(seed + 50)
    n_bins = 10
    got = call("q2", expected_calibration_error, conf.clone(), right.clone(), n_bins)
    bins = interpret.reliability_bins(conf, right, n_bins)
    used = bins.counts > 0
    gap = (bins.accuracy - bins.confidence)[used]
    w = bins.counts[used] / bins.counts.sum()
    expected = float(interpret.expected_calibration_error(conf, right, n_bins))
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = float(got)
    if isinstance(got, float) and math.isnan(got):
        fail("q2", "your ECE is NaN: the empty bins have NaN accuracy and confidence, and NaN * 0 is still NaN.",
             "leave empty bins out (keep only bins with a count above 0) before summing")
    compare("q2", got, expected, name=f"expected_calibration_error(conf, correct, {n_bins})", mistakes=[
        ("an unweighted mean of |accuracy - confidence| over the non-empty bins; weight each bin by its share n_b / N",
         float(gap.abs().mean())),
        ("an unweighted mean over all n_bins bins; weight each bin by its share n_b / N",
         float(gap.abs().sum() / n_bins)),
        ("forgot the absolute value: over- and under-confident bins cancel out", float((w * gap).sum())),
        ("squared the gaps; the ECE uses |accuracy - confidence|", float((w * gap ** 2).sum())),
        ("the gap of the whole set, |mean accuracy - mean confidence|, not bin by bin",
         abs(float(right.double().mean() - conf.mean()))),
    ])
    passed("q2", f"ECE = {expected:.4f}, weighted by bin size, empty bins skipped")


# --------------------------------------------------------------------------- q3, q4: the shipped model

WINDOWS, WINDOW_LENGTH, SKIP, N_BINS, SLICE_START = 48, 64, 8, 10, 20_000


@functools.lru_cache(maxsize=1)
def shipped_model():
    """The course's shipped character model and its tokenizer (cached: loaded once per process)."""
    from llmcourse.checkpoints import load_pretrained
    pretrained = load_pretrained("python_docs_char")
    return pretrained.model.eval(), pretrained.tokenizer


def calibration_slice() -> tuple[torch.Tensor, torch.Tensor]:
    """The slice of q3: WINDOWS windows of WINDOW_LENGTH characters of the validation text from
    SLICE_START on; inputs x and next characters y, both (WINDOWS, WINDOW_LENGTH)."""
    from llmcourse import data
    _, tok = shipped_model()
    text = data.python_docs().val[SLICE_START: SLICE_START + WINDOWS * WINDOW_LENGTH + 1]
    ids = torch.tensor(tok.encode(text))
    x = ids[: WINDOWS * WINDOW_LENGTH].view(WINDOWS, WINDOW_LENGTH)
    y = ids[1: WINDOWS * WINDOW_LENGTH + 1].view(WINDOWS, WINDOW_LENGTH)
    return x, y


def shuffled_slice() -> tuple[torch.Tensor, torch.Tensor]:
    """The same amount of text with its words shuffled (seed 0): (x, y) like calibration_slice."""
    import random

    from llmcourse import data
    _, tok = shipped_model()
    words = data.python_docs().val[SLICE_START: SLICE_START + 2 * WINDOWS * WINDOW_LENGTH].split(" ")
    random.Random(0).shuffle(words)
    ids = torch.tensor(tok.encode(" ".join(words)[: WINDOWS * WINDOW_LENGTH + 1]))
    return ids[:-1].view(WINDOWS, WINDOW_LENGTH), ids[1:].view(WINDOWS, WINDOW_LENGTH)


def confidences(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 confidence and correctness of the shipped model at every position after the first SKIP."""
    model, _ = shipped_model()
    with torch.no_grad():
        probs = torch.softmax(model(x)[0].double(), dim=-1)[:, SKIP:]      # (windows, T - SKIP, vocab)
    conf, pred = probs.max(dim=-1)
    return conf.flatten(), (pred == y[:, SKIP:]).flatten()


def q3(ece_on_slice, expected_calibration_error, reliability_table) -> None:
    """The ECE (N_BINS bins) of the shipped model's top-1 predictions on calibration_slice()."""
    requires("q3", "q2", "expected_calibration_error", lambda: q2(expected_calibration_error, reliability_table))
    answered("q3", ece_on_slice, "ece_on_slice")
    conf, correct = confidences(*calibration_slice())
    expected = float(interpret.expected_calibration_error(conf, correct, N_BINS))
    model, _ = shipped_model()
    x, y = calibration_slice()
    with torch.no_grad():
        all_probs = torch.softmax(model(x)[0].double(), dim=-1)
    c_all, p_all = all_probs.max(-1)
    measured("q3", ece_on_slice, expected, tolerance=2e-4, name="ece_on_slice",
             what=f"{len(conf)} predictions, accuracy {correct.double().mean():.3f}, "
                  f"mean confidence {conf.mean():.3f}", mistakes=[
                 (f"the first SKIP = {SKIP} positions of each window were kept; drop them (too little context)",
                  float(interpret.expected_calibration_error(c_all.flatten(), (p_all == y).flatten(), N_BINS))),
                 ("the overall gap |accuracy - mean confidence|, not the binned ECE",
                  abs(float(correct.double().mean() - conf.mean()))),
             ], hint="confidence = the largest softmax probability at each position; correct = its argmax is y")
    passed("q3", f"ECE {expected:.4f} on {len(conf)} predictions of the validation slice")


def q4(overconfidence) -> None:
    """Mean confidence minus accuracy of the shipped model on shuffled_slice()."""
    answered("q4", overconfidence, "overconfidence")
    conf, correct = confidences(*shuffled_slice())
    expected = float(conf.mean() - correct.double().mean())
    measured("q4", overconfidence, expected, tolerance=1e-3, name="overconfidence",
             what=f"mean confidence {conf.mean():.3f}, accuracy {correct.double().mean():.3f}", mistakes=[
                 ("accuracy minus confidence: the sign is flipped", -expected),
             ])
    passed("q4", f"on shuffled words the model is {expected:.3f} more confident than right")
