import math

import pytest
import torch

from llmcourse.data import MarkovSource, entropy, python_doc_topics, python_docs, random_markov_source


def test_corpus_is_real_english_split_without_overlap():
    corpus = python_docs()
    assert len(python_doc_topics()) == 79
    assert 400_000 < len(corpus.text) < 500_000
    assert 0.09 < len(corpus.val) / len(corpus.text) < 0.11
    assert corpus.train.endswith("\n\n")  # cut at a paragraph break
    assert corpus.text == "\n\n".join(python_doc_topics().values())
    assert "assert" in corpus.train and "Python Software Foundation License" in corpus.licence


def test_corpus_split_fraction_is_validated():
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        python_docs(val_fraction=1.0)


def test_entropy_matches_the_formula_and_handles_zeros():
    p = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(entropy(p), torch.tensor([1.5 * math.log(2), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("order,alphabet", [(1, "abcd"), (2, "abcdefgh"), (3, "abc")])
def test_stationary_distribution_is_stationary(order, alphabet):
    source = random_markov_source(alphabet=alphabet, order=order, seed=1)
    pi, T = source.stationary(), source.context_transitions()
    assert torch.allclose(T.sum(1), torch.ones(source.n_contexts, dtype=torch.float64))
    assert torch.allclose(pi @ T, pi, atol=1e-12) and abs(pi.sum().item() - 1) < 1e-12


def test_entropy_rate_of_a_known_chain():
    # order 1 over two letters: a -> a with 0.9, b -> a with 0.5. pi = (5/6, 1/6).
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    source = MarkovSource(alphabet="ab", order=1, next_probs=probs)
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert source.entropy_rate() == pytest.approx(5 / 6 * h(0.9) + 1 / 6 * h(0.5), abs=1e-12)


@pytest.mark.parametrize("order,concentration", [(1, 1.0), (2, 0.3), (3, 0.5)])
def test_entropy_rate_agrees_with_a_monte_carlo_estimate(order, concentration):
    source = random_markov_source(alphabet="abcdef", order=order, concentration=concentration, seed=order)
    log_likelihoods = source.log_likelihoods(source.sample(300_000, seed=7))
    estimate = -log_likelihoods.mean().item()
    standard_error = log_likelihoods.std().item() / math.sqrt(len(log_likelihoods))
    # The chain mixes fast, so 5 standard errors (plus a little for autocorrelation) is generous
    # yet still fails for an entropy rate off by more than about 1%.
    assert abs(estimate - source.entropy_rate()) < 5 * standard_error + 1e-3


def test_sample_is_reproducible_and_round_trips_through_text():
    source = random_markov_source(seed=3)
    a, b = source.sample(500, seed=9), source.sample(500, seed=9)
    assert torch.equal(a, b) and not torch.equal(a, source.sample(500, seed=10))
    assert torch.equal(source.encode(source.decode(a)), a)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        random_markov_source(order=0)
    with pytest.raises(ValueError, match="concentration must be a finite number > 0"):
        random_markov_source(concentration=-1)
    with pytest.raises(ValueError, match="alphabet must have at least 2 distinct"):
        random_markov_source(alphabet="aa")
    with pytest.raises(ValueError, match="outside the alphabet"):
        random_markov_source(alphabet="ab").encode("abc")
    with pytest.raises(ValueError, match="n_tokens must be at least"):
        random_markov_source(order=2).sample(2)


def test_entropy_in_nats_and_bits():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    assert float(entropy(p)) == pytest.approx(1.5 * math.log(2))
    assert float(entropy(p, base=2)) == pytest.approx(1.5)
    assert float(entropy(torch.tensor([1.0, 0.0]))) == 0.0
