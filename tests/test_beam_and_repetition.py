"""Unit 10's beam search and Hugging Face's repetition penalty, against exhaustive search and the reference."""
import itertools

import pytest
import torch

from llmcourse.generation import beam_search
from llmcourse.sampling import apply_repetition_penalty


class TableModel:
    """A toy LanguageModel: the next token's logits depend on the last token only (a random table)."""

    def __init__(self, vocab=4, seed=0):
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2

    def next_token_logits(self, ids):
        return self.table[ids[-1]]


def sequence_logprob(model, prompt, new):
    ids, total = list(prompt), 0.0
    for t in new:
        total += float(torch.log_softmax(model.next_token_logits(ids).double(), -1)[t])
        ids.append(t)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_beam_as_wide_as_every_continuation_finds_the_exact_best(seed):
    model = TableModel(seed=seed)
    best = max(itertools.product(range(4), repeat=4), key=lambda new: sequence_logprob(model, [0], new))
    ids, score = beam_search(model, [0], 4, beam_width=4 ** 4)
    assert tuple(ids) == best
    assert score == pytest.approx(sequence_logprob(model, [0], best))


def test_a_beam_of_one_is_greedy_decoding():
    model = TableModel(seed=3)
    ids, greedy = [0], []
    for _ in range(6):
        greedy.append(int(model.next_token_logits(ids + greedy).argmax()))
    assert beam_search(model, [0], 6, beam_width=1)[0] == greedy


def test_repetition_penalty_matches_hugging_face():
    transformers = pytest.importorskip("transformers")
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(0)) * 3
    seen = torch.tensor([[1, 3, 3, 7], [0, 2, 5, 9]])
    counts = torch.zeros(2, 10).scatter_add(1, seen, torch.ones(2, 4))
    reference = transformers.RepetitionPenaltyLogitsProcessor(penalty=1.3)(seen, logits.clone())
    assert torch.allclose(apply_repetition_penalty(logits, counts, 1.3), reference)


def test_repetition_penalty_formula_and_bad_input():
    out = apply_repetition_penalty(torch.tensor([2.0, -2.0, 2.0]), torch.tensor([1, 1, 0]), 2.0)
    assert out.tolist() == [1.0, -4.0, 2.0]
    with pytest.raises(ValueError, match="penalty"):
        apply_repetition_penalty(torch.zeros(3), torch.zeros(3), 0.0)
