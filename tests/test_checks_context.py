"""The unit 11 checks: they pass correct answers, fail the stub and name each classic mistake."""
import math

import pytest
import torch

from llmcourse.checks import CheckFailure
from llmcourse.checks import context as check


def attend(q, k, v, cache, *, scale=True, self_first=True, grow=True):
    keys, values = torch.cat([cache["k"], k[None]]), torch.cat([cache["v"], v[None]])
    seen_k, seen_v = (keys, values) if self_first else (cache["k"], cache["v"])
    scores = seen_k @ q / (math.sqrt(len(q)) if scale else 1.0)
    out = torch.softmax(scores, 0) @ seen_v
    return out, ({"k": keys, "v": values} if grow else {"k": k[None], "v": v[None]})


def counts(tokens, vocab, *, future=False, before=False):
    hot = torch.nn.functional.one_hot(tokens, vocab)
    if future:
        return hot.sum(1, keepdim=True).argmax(-1).expand(-1, tokens.shape[1])
    running = hot.cumsum(1) - (hot if before else 0)
    return running.argmax(-1)


def measure(count_fn=counts):
    tokens = check.favourite_tokens()
    acc = (count_fn(tokens, check.VOCAB)[:, :-1] == tokens[:, 1:]).double().mean(0)
    return float(acc[0]), float(acc[-8:].mean())


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 11, 12):
        check.q1(attend, seed=seed)
        check.q2(counts, seed=seed)
    first, late = measure()
    check.q3(first, late, counts)
    check.q4(math.ceil(814720 / (2 * 4 * 128)))
    assert capsys.readouterr().out.count("✓") == 10
    assert first < late < 0.5 + 0.5 / check.VOCAB         # learning in context, below the ceiling


def test_the_cached_attention_is_torchs_causal_attention():
    q, k, v = check._qkv(3)
    ref = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
    assert torch.allclose(check._causal(q, k, v, 1 / math.sqrt(q.shape[1])), ref)


@pytest.mark.parametrize("kw,message", [
    ({"scale": False}, "no 1/sqrt\\(d\\) scaling"),
    ({"self_first": False}, "did not attend to itself"),
    ({"grow": False}, "must grow"),
])
def test_q1_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(lambda *a: attend(*a, **kw))


@pytest.mark.parametrize("kw,message", [
    ({"future": True}, "future included"),
    ({"before": True}, "only the tokens BEFORE"),
])
def test_q2_names_the_mistake(kw, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(lambda *a: counts(*a, **kw))


def test_q2_last_token_and_blame_in_q3():
    with pytest.raises(CheckFailure, match="last token seen"):
        check.q2(lambda tokens, vocab: tokens.clone())
    first, late = measure()
    with pytest.raises(CheckFailure, match="your `count_predictions` from q2 is not right yet"):
        check.q3(first, late, lambda *a: counts(*a, future=True))


def test_q3_q4_compare_with_their_own_run():
    first, late = measure()
    tokens = check.favourite_tokens()
    same = (counts(tokens, check.VOCAB) == tokens).double().mean(0)
    with pytest.raises(CheckFailure, match="already seen"):
        check.q3(float(same[0]), late, counts)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q3(None, None, counts)
    with pytest.raises(CheckFailure, match="forgot the values"):
        check.q4(math.ceil(814720 / (4 * 128)))
    with pytest.raises(CheckFailure, match="rounded down"):
        check.q4(math.ceil(814720 / (2 * 4 * 128)) - 1)
    with pytest.raises(CheckFailure, match="not answered yet"):
        check.q4(None)
