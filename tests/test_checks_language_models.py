"""The unit 01 checks: they pass correct answers (for the shown and the hidden seeds) and name
each classic mistake."""
import math

import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import language_models as check

SEEDS = (0, 11, 12, 21)


def bigram_probs(ids, V):
    counts = torch.zeros(V, V, dtype=torch.long)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist()):
        counts[a, b] += 1
    return counts / counts.sum(-1, keepdim=True)


def sequence_log_prob(ids, first, P):
    return first[ids[0]].log() + P[ids[:-1], ids[1:]].log().sum()  # a 0-d tensor is accepted too


def sample_bigram(P, start, n, generator):
    out, current = [], start
    for _ in range(n):
        current = int(torch.multinomial(P[current], 1, generator=generator))
        out.append(current)
    return torch.tensor(out)


def entropy_rate(P, pi):
    return float((pi * -torch.special.xlogy(P, P).sum(-1)).sum())


def validation_losses(train_ids, val_ids, base=math.e):
    counts = torch.zeros(6, 6)
    for a, b in zip(train_ids[:-1].tolist(), train_ids[1:].tolist()):
        counts[a, b] += 1
    losses = {}
    for k in check.KS:
        P = (counts + k) / (counts.sum(-1, keepdim=True) + 6 * k)
        losses[k] = -(P[val_ids[:-1], val_ids[1:]].log() / math.log(base)).mean().item()
    return losses


def test_correct_answers_pass_for_every_seed(capsys):
    for seed in SEEDS:
        check.q1(bigram_probs, seed=seed)
        check.q2(sequence_log_prob, seed=seed)
        check.q3(sample_bigram, seed=seed)
        check.q4(entropy_rate, seed=seed)
    _, train_ids, val_ids = check.experiment_data()
    check.q5(validation_losses(train_ids, val_ids))
    check.q6("too little training text")
    assert capsys.readouterr().out.count("✓") == 4 * len(SEEDS) + 2


def test_q3_accepts_another_correct_sampler():
    """Inverse-CDF sampling with torch.rand(generator=...) is correct too, though its draws differ."""
    def inverse_cdf(P, start, n, generator):
        out, current = [], start
        for _ in range(n):
            u = torch.rand((), generator=generator, dtype=torch.float64)
            current = min(int((P[current].cumsum(0) < u).sum()), len(P) - 1)
            out.append(current)
        return out  # a list is accepted

    check.q3(inverse_cdf)


def pairs(ids, V):
    counts = torch.zeros(V, V, dtype=torch.long)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist()):
        counts[a, b] += 1
    return counts


@pytest.mark.parametrize("func,message", [
    (lambda ids, V: pairs(ids, V).T / pairs(ids, V).T.sum(-1, keepdim=True), "rows and columns swapped"),
    (lambda ids, V: pairs(ids, V) / pairs(ids, V).sum(0, keepdim=True), r"wrong axis \(columns\)"),
    (lambda ids, V: pairs(ids, V), "raw counts"),
    (lambda ids, V: pairs(ids, V) // pairs(ids, V).sum(-1, keepdim=True), "integer division"),
    (lambda ids, V: bigram_probs(torch.cat([ids, ids[:1]]), V), r"\(last token, first token\)"),
    (lambda ids, V: bigram_probs(ids, V)[:, :-1], r"shape \(5, 4\), expected \(5, 5\)"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("func,message", [
    (lambda ids, f, P: P[ids[:-1], ids[1:]].log().sum(), "left out the first token"),
    (lambda ids, f, P: f[ids[0]] * P[ids[:-1], ids[1:]].prod(), "probability \\(a product\\)"),
    (lambda ids, f, P: f[ids[0]].log() + P[ids[1:], ids[:-1]].log().sum(), r"P\[next, previous\]"),
    (lambda ids, f, P: (f[ids[0]].log() + P[ids[:-1], ids[1:]].log().sum()) / len(ids), "averaged instead of summing"),
    (lambda ids, f, P: f[ids[0]].log2() + P[ids[:-1], ids[1:]].log2().sum(), "log base 2"),
    (lambda ids, f, P: -(f[ids[0]].log() + P[ids[:-1], ids[1:]].log().sum()), r"-log P \(the loss\)"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


def column_sampler(P, start, n, g):
    out, current = [], start
    for _ in range(n):
        current = int(torch.multinomial(P[:, current], 1, generator=g))
        out.append(current)
    return torch.tensor(out)


def stuck_sampler(P, start, n, g):
    return torch.multinomial(P[start], n, replacement=True, generator=g)


def global_rng_sampler(P, start, n, g):
    out, current = [], start
    for _ in range(n):
        current = int(torch.multinomial(P[current], 1))
        out.append(current)
    return torch.tensor(out)


def greedy(P, start, n, g):
    out, current = [], start
    for _ in range(n):
        current = int(P[current].argmax())
        out.append(current)
    return torch.tensor(out)


@pytest.mark.parametrize("func,message", [
    (global_rng_sampler, "same seed gave different tokens"),
    (greedy, "different seeds gave the same tokens"),
    (column_sampler, "a move the model forbids|differs from P by up to"),
    (stuck_sampler, "a move the model forbids"),
    (lambda P, start, n, g: torch.cat([torch.tensor([start]), sample_bigram(P, start, n, g)]), r"expected shape \(60,\)"),
    (lambda P, start, n, g: sample_bigram(P, start, n, g).double(), "integer token ids"),
    (lambda P, start, n, g: "abc", "expected a tensor"),
])
def test_q3_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func)


def test_q3_catches_a_sampler_that_draws_from_a_slightly_wrong_row():
    def biased(P, start, n, g):
        out, current = [], start
        for _ in range(n):
            row = P[current].clone()
            row[row > 0] = 1.0  # uniform over the allowed moves: never impossible, but wrong shares
            current = int(torch.multinomial(row, 1, generator=g))
            out.append(current)
        return torch.tensor(out)

    with pytest.raises(CheckFailure, match="differs from P by up to"):
        check.q3(biased)


@pytest.mark.parametrize("func,message", [
    (lambda P, pi: float(-torch.special.xlogy(P, P).sum(-1).mean()), "plain mean of the row entropies"),
    (lambda P, pi: float(-torch.special.xlogy(pi, pi).sum()), "entropy of pi"),
    (lambda P, pi: entropy_rate(P, pi) / math.log(2), "log base 2"),
    (lambda P, pi: -entropy_rate(P, pi), "negative entropy"),
    (lambda P, pi: float((pi * -(P * P.log()).sum(-1)).sum()), r"(?s)is nan.*0 \* log 0"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


def test_q5_names_the_mistake():
    _, train_ids, val_ids = check.experiment_data()
    cases = [
        (None, "not answered yet"),
        ([1.0], "should be a dict with the keys KS"),
        (validation_losses(train_ids, train_ids), "scored the training text"),
        (validation_losses(train_ids, val_ids, base=2), r"in bits \(log2\)"),
        ({k: v + 0.01 for k, v in validation_losses(train_ids, val_ids).items()}, r"own run .*±0.001"),
    ]
    for answer, message in cases:
        with pytest.raises(CheckFailure, match=message):
            check.q5(answer)


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"), ("too little context", "first order"),
                                            ("smoothing cannot help", "smoothing did help"),
                                            ("data", "should be one of")])
def test_q6_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q6(answer)
