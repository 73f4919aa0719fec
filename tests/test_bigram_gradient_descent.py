"""The bigram as a logit table learned by gradient descent (unit 01), against autograd and the counts."""
import pytest
import torch

from llmcourse.data import random_markov_source
from llmcourse.ngram import NGramModel, bigram_count_matrix, bigram_loss_and_gradient, train_bigram_logits


def test_count_matrix_matches_the_counting_model():
    ids = random_markov_source(alphabet="abcde", order=2, seed=3).sample(2_000, seed=0)
    counts = bigram_count_matrix(ids, 5)
    model = NGramModel.fit(ids, 2, vocab_size=5)
    for a in range(5):
        assert torch.equal(counts[a].long(), model.counts([a]))
    assert bigram_count_matrix([0, 1, 0, 1, 1], 2).tolist() == [[0, 2], [1, 1]]


def test_hand_gradient_equals_autograd():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    counts = torch.randint(0, 5, (7, 7), generator=generator).double()
    loss, gradient = bigram_loss_and_gradient(logits.detach(), counts)
    reference = torch.nn.functional.cross_entropy(                       # one row per counted pair
        logits.repeat_interleave(counts.sum(1).long(), dim=0),
        torch.cat([torch.arange(7).repeat_interleave(counts[a].long()) for a in range(7)]))
    reference.backward()
    assert torch.allclose(loss, reference.detach())
    assert torch.allclose(gradient, logits.grad)


def test_gradient_descent_reaches_the_counting_models_loss():
    ids = random_markov_source(alphabet="abcdefgh", order=2, seed=0).sample(30_000, seed=1)
    counts = bigram_count_matrix(ids, 8)
    model = NGramModel.fit(ids, 2, vocab_size=8)
    probs = torch.stack([model.next_token_probs([a]) for a in range(8)])             # (8, 8) counted
    counted_loss = -(counts * probs.log().nan_to_num(neginf=0.0)).sum() / counts.sum()
    logits, losses = train_bigram_logits(counts, 200, learning_rate=20.0)
    assert losses[0] == pytest.approx(torch.log(torch.tensor(8.0)).item())           # zeros: uniform
    assert losses[-1] == pytest.approx(counted_loss.item(), abs=1e-6)
    assert torch.allclose(logits.softmax(-1), probs, atol=1e-3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="logits and counts"):
        bigram_loss_and_gradient(torch.zeros(3, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="learning_rate"):
        train_bigram_logits(torch.ones(2, 2), 5, learning_rate=0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        bigram_count_matrix([1], 3)
