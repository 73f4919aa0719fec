"""The n-gram model against references computed a second way: Python counters, PyTorch's
cross-entropy, and a Markov source whose entropy rate is known exactly."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from llmcourse.data import random_markov_source
from llmcourse.ngram import SMOOTHINGS, NGramModel, ngram_keys
from llmcourse.tokenizers import CharTokenizer


def random_ids(n: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def all_contexts(length: int, vocab: int) -> list[list[int]]:
    """Every context of `length` tokens over `vocab` tokens: [[0, 0], [0, 1], ...]."""
    return [[(c // vocab ** (length - 1 - i)) % vocab for i in range(length)] for c in range(vocab ** length)]


def test_ngram_keys_worked_example():
    assert ngram_keys(torch.tensor([2, 0, 1, 3]), 2, 5).tolist() == [10, 1, 8]
    assert ngram_keys(torch.tensor([2, 0, 1, 3]), 3, 5).tolist() == [2 * 25 + 0 + 1, 0 + 5 + 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bigram_mle_equals_counts_over_row_sums_from_a_python_counter(seed):
    ids = random_ids(500, 6, seed)
    model = NGramModel.fit(ids, order=2, vocab_size=6)
    pairs = Counter(zip(ids[:-1].tolist(), ids[1:].tolist()))
    for prev in range(6):
        row = torch.tensor([pairs[(prev, nxt)] for nxt in range(6)], dtype=torch.float64)
        assert torch.equal(model.counts([prev]), row.long())
        torch.testing.assert_close(model.next_token_probs([prev]), row / row.sum())


def test_unigram_is_the_token_frequencies_and_ignores_the_context():
    ids = random_ids(300, 5, 3)
    model = NGramModel.fit(ids, order=1, vocab_size=5)
    freq = torch.bincount(ids, minlength=5).double() / len(ids)
    torch.testing.assert_close(model.next_token_probs(), freq)
    torch.testing.assert_close(model.next_token_probs([1, 2, 3]), freq)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one_for_every_context(smoothing, order):
    vocab = 4
    ids = random_ids(60, vocab, 7)  # short: many trigram contexts are never seen
    model = NGramModel.fit(ids, order, vocab_size=vocab, smoothing=smoothing)
    seen = {tuple(ids[i:i + order - 1].tolist()) for i in range(len(ids) - order + 1)}
    n_checked = 0
    for length in range(order):  # full contexts and the shorter ones the first tokens use
        for context in all_contexts(length, vocab):
            if smoothing == "none" and length == order - 1 and tuple(context) not in seen:
                with pytest.raises(ValueError, match="context_ids .* never appeared"):
                    model.next_token_probs(context)
                continue
            probs = model.next_token_probs(context)
            assert probs.shape == (vocab,) and probs.dtype == torch.float64 and (probs >= 0).all()
            assert math.isclose(probs.sum().item(), 1.0, abs_tol=1e-12)
            n_checked += 1
    assert n_checked >= 1 + (order > 1) * 4


@pytest.mark.parametrize("k", [1.0, 0.1])
def test_add_k_is_counts_plus_k_over_total_plus_k_times_vocab(k):
    ids = random_ids(200, 5, 4)
    model = NGramModel.fit(ids, order=3, vocab_size=5, smoothing="add-k", k=k)
    triples = Counter(zip(ids[:-2].tolist(), ids[1:-1].tolist(), ids[2:].tolist()))
    for a, b in [(0, 1), (4, 4), (2, 3)]:
        row = torch.tensor([triples[(a, b, c)] for c in range(5)], dtype=torch.float64)
        torch.testing.assert_close(model.next_token_probs([9 % 5, a, b]), (row + k) / (row.sum() + 5 * k))


def test_add_k_gives_an_unseen_context_the_uniform_distribution():
    model = NGramModel.fit([0, 1, 0, 1], order=2, vocab_size=3, smoothing="add-k")
    torch.testing.assert_close(model.next_token_probs([2]), torch.full((3,), 1 / 3, dtype=torch.float64))


def witten_bell_reference(ids: list[int], order: int, vocab: int, context: list[int]) -> list[float]:
    """Witten-Bell interpolation written out with dictionaries, one level at a time."""
    probs = [1 / vocab] * vocab
    for m in range(min(len(context), order - 1) + 1):
        h = tuple(context[len(context) - m:])
        follow = Counter(tuple(ids[i + m:i + m + 1]) for i in range(len(ids) - m) if tuple(ids[i:i + m]) == h)
        total, types = sum(follow.values()), len(follow)
        if total:
            probs = [(follow[(w,)] + types * probs[w]) / (total + types) for w in range(vocab)]
    return probs


@pytest.mark.parametrize("context", [[], [1], [2, 0], [3, 3], [0, 1, 2]])
def test_interpolated_matches_a_dictionary_implementation(context):
    ids = random_ids(80, 4, 5).tolist()
    model = NGramModel.fit(ids, order=3, vocab_size=4, smoothing="interpolated")
    expected = torch.tensor(witten_bell_reference(ids, 3, 4, context), dtype=torch.float64)
    torch.testing.assert_close(model.next_token_probs(context), expected)


def test_interpolated_falls_back_to_the_shorter_context_when_the_context_is_unseen():
    model = NGramModel.fit([0, 1, 0, 1, 1, 0], order=3, vocab_size=3, smoothing="interpolated")
    # context (2, 0) never occurred: its distribution is that of the context (0,)
    torch.testing.assert_close(model.next_token_probs([2, 0]), model.next_token_probs([0]))


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 4])
def test_cross_entropy_equals_pytorch_on_the_same_log_probs(smoothing, order):
    train = random_ids(400, 5, 8)
    model = NGramModel.fit(train, order, vocab_size=5, smoothing=smoothing)
    text = train[100:160] if smoothing == "none" else random_ids(60, 5, 9)  # "none": only seen n-grams
    logits = torch.stack([model.next_token_logits(text[:i]) for i in range(len(text))])  # (time, vocab)
    expected = F.cross_entropy(logits, text).item()
    assert math.isclose(model.cross_entropy(text), expected, rel_tol=1e-12)
    assert math.isclose(model.log_prob(text), -F.cross_entropy(logits, text, reduction="sum").item(), rel_tol=1e-12)
    assert math.isclose(model.perplexity(text), math.exp(expected), rel_tol=1e-12)
    torch.testing.assert_close(torch.softmax(model.next_token_logits(text[:5]), -1), model.next_token_probs(text[:5]))


def test_log_prob_is_the_chain_rule_by_hand():
    ids = [0, 1, 1, 0, 1, 0, 0, 1]
    model = NGramModel.fit(ids, order=2, vocab_size=2)
    # P(0) = 4/8; then bigram probabilities: after 0: {0: 1/4, 1: 3/4}; after 1: {0: 2/3, 1: 1/3}
    text = [0, 1, 0]
    expected = math.log(4 / 8) + math.log(3 / 4) + math.log(2 / 3)
    assert math.isclose(model.log_prob(text), expected, rel_tol=1e-12)


def test_unsmoothed_model_gives_an_unseen_token_probability_zero_and_infinite_loss():
    model = NGramModel.fit([0, 1, 0, 1, 2], order=2, vocab_size=3)
    assert model.next_token_probs([0]).tolist() == [0.0, 1.0, 0.0]
    assert model.next_token_logits([0])[0] == float("-inf")
    assert model.cross_entropy([0, 0]) == float("inf")
    assert model.seen([0, 0]).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"position 3 \(context \[2\]\)"):
        model.log_probs([0, 1, 2, 0])  # 2 never had a successor


def test_seen_matches_a_set_of_training_ngrams():
    train, val = random_ids(300, 6, 10), random_ids(100, 6, 11)
    model = NGramModel.fit(train, order=3, vocab_size=6)
    grams = {tuple(train[i:i + 3].tolist()) for i in range(len(train) - 2)}
    expected = [tuple(val[i - 2:i + 1].tolist()) in grams for i in range(2, len(val))]
    assert model.seen(val)[2:].tolist() == expected
    assert not all(expected)


def test_the_matching_order_on_lots_of_markov_data_approaches_the_entropy_rate():
    source = random_markov_source(alphabet="abcd", order=2, seed=3)
    floor = source.entropy_rate()
    train, val = source.sample(200_000, seed=1), source.sample(50_000, seed=2)
    model = NGramModel.fit(train, order=3, vocab_size=4, smoothing="add-k", k=0.1)  # context = 2 tokens
    assert abs(model.cross_entropy(val) - floor) < 0.01
    # the source's own probabilities reach the floor too; a model one order too short cannot
    assert abs(-source.log_likelihoods(val).mean().item() - floor) < 0.01
    assert NGramModel.fit(train, order=2, vocab_size=4, smoothing="add-k").cross_entropy(val) > floor + 0.05


def test_high_orders_overfit_train_loss_below_the_floor():
    source = random_markov_source(alphabet="abcdefgh", order=2, seed=0)
    train, val = source.sample(20_000, seed=1), source.sample(5_000, seed=2)
    model = NGramModel.fit(train, order=6, vocab_size=8)
    assert model.cross_entropy(train) < source.entropy_rate() - 0.3  # memorised: below any honest loss
    assert model.with_smoothing("add-k", k=0.1).cross_entropy(val) > source.entropy_rate() + 0.1


def test_sampling_is_reproducible_with_a_seeded_generator_and_follows_the_probabilities():
    ids = random_ids(2000, 4, 12)
    model = NGramModel.fit(ids, order=2, vocab_size=4)
    a = model.sample(3000, torch.Generator().manual_seed(5), context=[1])
    b = model.sample(3000, torch.Generator().manual_seed(5), context=[1])
    c = model.sample(3000, torch.Generator().manual_seed(6), context=[1])
    assert a.shape == (3000,) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    sequence = torch.cat([torch.tensor([1]), a])
    for prev in range(4):
        after = sequence[1:][sequence[:-1] == prev]
        freq = torch.bincount(after, minlength=4).double() / len(after)
        torch.testing.assert_close(freq, model.next_token_probs([prev]), atol=0.05, rtol=0)


def test_unsmoothed_samples_only_contain_ngrams_of_the_training_text():
    text = "the cat sat on the mat. the dog sat on the cat."
    model = NGramModel.fit_text(text, order=3)
    out = model.sample_text(200, torch.Generator().manual_seed(0), prompt="the")
    assert out.startswith("the") and len(out) == 203
    grams = {text[i:i + 3] for i in range(len(text) - 2)}
    assert all(out[i:i + 3] in grams for i in range(len(out) - 2))


def test_fit_text_uses_a_given_tokenizer_so_validation_characters_are_known():
    tok = CharTokenizer("abcxyz")
    model = NGramModel.fit_text("abcabc", order=2, tokenizer=tok, smoothing="add-k")
    assert model.vocab_size == 6 and model.tokenizer is tok
    assert math.isfinite(model.cross_entropy(tok.encode("xyz")))


def test_fitting_order_six_on_the_corpus_is_vectorised():
    from llmcourse.data import python_docs

    corpus = python_docs()
    tok = CharTokenizer(corpus.text)
    model = NGramModel.fit(tok.encode(corpus.train), order=6, vocab_size=tok.vocab_size)
    grams = {corpus.train[i:i + 6] for i in range(0, len(corpus.train) - 5, 997)}
    assert len(model.tables[-1].keys) > 10 * len(grams)  # hundreds of thousands of distinct 6-grams
    assert model.tables[-1].counts.sum() == len(corpus.train) - 5
    assert model.counts(tok.encode("retur"))[tok.ids["n"]] == corpus.train.count("return")


@pytest.mark.parametrize("kwargs,message", [
    (dict(ids=[0, 1], order=0), r"order must be an int >= 1 .*got 0"),
    (dict(ids=[0, 1], order=-2), r"order must be an int >= 1"),
    (dict(ids=[0, 1], order=2.0), r"order must be an int >= 1 .*got 2.0"),
    (dict(ids=[0, 1], order=True), r"order must be an int >= 1"),
    (dict(ids=[], order=2), r"ids must hold at least one token id; got an empty sequence"),
    (dict(ids=[0, 1], order=3), r"ids must hold at least order = 3 tokens"),
    (dict(ids=[0, 5], order=2, vocab_size=3), r"ids must be token ids in \[0, 3\) .*got \[5\]"),
    (dict(ids=[0, -1], order=2, vocab_size=3), r"ids must be token ids in \[0, 3\)"),
    (dict(ids=torch.zeros(2, 3, dtype=torch.long), order=2), r"1-D sequence .*shape \(2, 3\)"),
    (dict(ids=torch.tensor([0.0, 1.0]), order=2), r"integer token ids; got dtype torch.float32"),
    (dict(ids="abc", order=2), r"not a string"),
    (dict(ids=[0, 1], order=2, smoothing="laplace"), r"smoothing must be one of 'none', 'add-k', 'interpolated'"),
    (dict(ids=[0, 1], order=2, smoothing="add-k", k=0), r"k must be a finite number > 0"),
    (dict(ids=[0, 1], order=2, smoothing="add-k", k=float("inf")), r"k must be a finite number > 0"),
    (dict(ids=[0, 1], order=2, k=0.5), r"k is only used with smoothing='add-k'"),
    (dict(ids=[0, 1], order=2, vocab_size=0), r"vocab_size must be an int >= 1"),
    (dict(ids=[0, 1], order=40, vocab_size=300), r"vocab_size \*\* order <= 2\*\*62"),
])
def test_bad_input_is_refused_naming_the_argument(kwargs, message):
    ids = kwargs.pop("ids")
    with pytest.raises(ValueError, match=message):
        NGramModel.fit(ids, **kwargs)


def test_bad_queries_are_refused_naming_the_argument():
    model = NGramModel.fit([0, 1, 0, 1, 2], order=2, vocab_size=3)
    with pytest.raises(ValueError, match=r"context_ids \[2\] never appeared in the training text"):
        model.next_token_probs([1, 2])
    with pytest.raises(ValueError, match=r"context_ids must be token ids in \[0, 3\)"):
        model.next_token_logits([7])
    with pytest.raises(ValueError, match="ids must hold at least one token"):
        model.cross_entropy([])
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        model.sample(-1)
    with pytest.raises(ValueError, match="sample_text needs a tokenizer"):
        model.sample_text(3)
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        NGramModel.fit_text("", order=2)
    assert model.sample(0).shape == (0,)
