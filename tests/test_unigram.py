"""The unigram tokenizer trained from scratch (unit 02), against brute force and SentencePiece."""
import math
import re
from collections import Counter

import pytest

from llmcourse.unigram import (all_segmentations, backward, em_step, expected_counts, forward, log_likelihood,
                               prune, seed_vocabulary, train_unigram, viterbi)

WORDS = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}


def segmentation_probs(word, log_probs):
    """Every segmentation with its probability, by enumeration: the reference."""
    return [(s, math.exp(sum(log_probs[x] for x in s))) for s in all_segmentations(word, log_probs)]


def test_forward_and_backward_sum_every_segmentation():
    log_probs = seed_vocabulary(WORDS, max_piece_length=3)
    for word in WORDS:
        brute = math.log(sum(p for _, p in segmentation_probs(word, log_probs)))
        assert forward(word, log_probs)[-1] == pytest.approx(brute)
        assert backward(word, log_probs)[0] == pytest.approx(brute)
    assert sorted(map(tuple, all_segmentations("hug", {"h", "u", "g", "hu", "ug"}))) == \
        [("h", "u", "g"), ("h", "ug"), ("hu", "g")]


def test_expected_counts_equal_the_enumerated_average():
    log_probs = seed_vocabulary(WORDS, max_piece_length=3)
    counts, total = expected_counts(WORDS, log_probs)
    reference = Counter()
    for word, n in WORDS.items():
        segs = segmentation_probs(word, log_probs)
        z = sum(p for _, p in segs)
        for s, p in segs:
            for piece in s:
                reference[piece] += n * p / z
    assert set(counts) == set(reference)
    for piece in reference:
        assert counts[piece] == pytest.approx(reference[piece])
    assert total == pytest.approx(log_likelihood(WORDS, log_probs))


def test_em_never_lowers_the_likelihood_and_pruning_keeps_characters():
    log_probs = seed_vocabulary(WORDS, max_piece_length=4)
    previous = -math.inf
    for _ in range(6):
        log_probs, before = em_step(WORDS, log_probs)
        assert before >= previous - 1e-9
        previous = before
    assert log_likelihood(WORDS, log_probs) >= previous - 1e-9
    pruned = prune(WORDS, log_probs, keep=9)
    assert len(pruned) == 9 and set("hugpnbs") <= set(pruned)
    assert sum(math.exp(lp) for lp in pruned.values()) == pytest.approx(1.0)
    final, history = train_unigram(WORDS, 10, em_steps=5)
    assert len(final) == 10 and history[-1]["vocab_size"] == 10


def test_viterbi_finds_the_most_likely_segmentation():
    log_probs = seed_vocabulary(WORDS, max_piece_length=2)
    for word in WORDS:
        best = max(segmentation_probs(word, log_probs), key=lambda sp: sp[1])[0]
        assert viterbi(word, log_probs) == best
    assert viterbi("hug", {"h": -3, "u": -3, "g": -3, "hu": -2, "ug": -4}) == ["hu", "g"]


def test_viterbi_with_sentencepieces_scores_segments_as_sentencepiece_does():
    from llmcourse.data import python_docs
    from llmcourse.tokenizers import train_sentencepiece

    text = python_docs().train[:60_000]
    sp = train_sentencepiece(text, 400)
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_byte(i) or sp.is_unknown(i))}
    words = sorted(set(re.findall(r" ?[a-z]+", python_docs().val[:20_000])))
    assert len(words) > 300
    for word in words:
        assert viterbi(word.replace(" ", "\u2581"), scores) == sp.encode(word, out_type=str), word


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="words must"):
        seed_vocabulary({"a": 0})
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_unigram(WORDS, 3)
    with pytest.raises(ValueError, match="cannot segment"):
        viterbi("xyz", {"x": -1.0})
