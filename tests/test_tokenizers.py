"""Tokenizers: characters, byte-level BPE (against plain references and by property), SentencePiece."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse.data import python_docs
from llmcourse.tokenizers import (SPLIT_PATTERN, BPETokenizer, CharTokenizer, get_stats, merge, split_text,
                                  train_bpe, train_bpe_naive, train_sentencepiece)

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def corpus():
    return python_docs()


@pytest.fixture(scope="module")
def tok(corpus):
    """BPE trained on a slice of the corpus with one special token (vocab 256 + 200 merges + 1)."""
    return BPETokenizer.train(corpus.train[:60_000], vocab_size=457, special_tokens=[EOT])


# --- characters --------------------------------------------------------------------------------

def test_char_tokenizer_round_trips_and_refuses_unknowns():
    t = CharTokenizer("hello")
    assert t.vocab == ["e", "h", "l", "o"] and t.encode("hole") == [1, 3, 2, 0]
    assert t.decode(torch.tensor([1, 3, 2, 0])) == "hole"
    with pytest.raises(ValueError, match="never saw"):
        t.encode("help")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\)"):
        t.decode([4])


# --- the building blocks -----------------------------------------------------------------------

def test_docstring_examples():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_stats([1, 1, 1]) == {(1, 1): 2}
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([1, 1, 1], (1, 1), 4) == [4, 1]
    assert split_text("Hello, world!!") == ["Hello", ",", " world", "!!"]


@given(st.lists(st.integers(0, 3), max_size=40), st.integers(0, 3), st.integers(0, 3))
def test_merge_equals_str_replace(ids, a, b):
    """str.replace also scans left to right without overlap: a trusted reference for merge."""
    as_text = "".join(chr(65 + i) for i in ids)
    expected = [ord(c) - 65 if c != "Z" else 99 for c in as_text.replace(chr(65 + a) + chr(65 + b), "Z")]
    assert merge(ids, (a, b), 99) == expected


@given(st.lists(st.integers(0, 5), max_size=40))
def test_get_stats_counts_every_neighbouring_pair(ids):
    stats = get_stats(ids)
    assert sum(stats.values()) == max(len(ids) - 1, 0)
    for (a, b), n in stats.items():
        assert n == sum(1 for i in range(len(ids) - 1) if ids[i] == a and ids[i + 1] == b)


@given(st.text())
def test_split_text_loses_nothing(text):
    assert "".join(split_text(text)) == text


def test_wikipedia_example_by_hand():
    # "aaabdaaabac": aa occurs 4 times (overlaps count), then (aa, a) and (a, b) tie at 2: the
    # smaller pair (97, 98) wins; then "aa" + "ab" makes "aaab".
    merges = train_bpe("aaabdaaabac", 259, pattern=None)
    assert merges == [(97, 97), (97, 98), (256, 257)]
    tok = BPETokenizer(merges, pattern=None)
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.vocab[258] == b"aaab"


# --- incremental training equals the naive reference -------------------------------------------

def test_incremental_and_naive_trainers_learn_identical_merges(corpus):
    text = corpus.train[:6_000]
    fast = train_bpe(text, 256 + 150)
    assert fast == train_bpe_naive(text, 256 + 150)
    assert len(fast) == 150


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="ab c\né", min_size=1, max_size=80), st.integers(256, 300),
       st.sampled_from([SPLIT_PATTERN, None]))
def test_incremental_equals_naive_on_random_text(text, vocab_size, pattern):
    """Runs of one letter ("aaaa") and ties are where an incremental update goes wrong."""
    assert train_bpe(text, vocab_size, pattern=pattern) == train_bpe_naive(text, vocab_size, pattern=pattern)


def test_training_stops_when_nothing_is_left_to_merge():
    assert train_bpe("ab ab", 1000) == train_bpe_naive("ab ab", 1000) == [(97, 98), (32, 256)]


def test_merges_are_nested_so_truncating_equals_training_smaller(corpus):
    text = corpus.train[:20_000]
    big = BPETokenizer.train(text, 600)
    assert big.truncated(400).merges == BPETokenizer.train(text, 400).merges


def test_more_merges_give_fewer_tokens(corpus, tok):
    val = corpus.val[:20_000]
    lengths = [len(tok.truncated(v).encode(val)) for v in (257, 300, 400, 457)]
    assert lengths[0] == len(val.encode("utf-8"))  # no merges: one token per byte
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] < 0.6 * lengths[0]


def test_encode_applies_merges_in_rank_order(corpus, tok):
    """Encoding each chunk equals applying every merge, in the order learned, to its bytes."""
    for chunk in split_text(corpus.val[:3_000]):
        ids = list(chunk.encode("utf-8"))
        for pair, new_id in tok.merges.items():
            ids = merge(ids, pair, new_id)
        assert tok.encode(chunk) == ids


# --- byte level: anything round-trips; special tokens ------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_string_round_trips(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode_ordinary(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=5))
def test_special_token_is_one_id_and_round_trips(tok, parts):
    text = EOT.join(parts)
    ids = tok.encode(text)
    eot = tok.special_tokens[EOT]
    assert ids.count(eot) == text.count(EOT) == len(parts) - 1
    assert tok.decode(ids) == text
    assert eot not in tok.encode_ordinary(text)


def test_special_tokens_are_never_merged(corpus):
    text = EOT.join(corpus.train[i:i + 500] for i in range(0, 20_000, 500))  # 39 special tokens
    tok = BPETokenizer.train(text, 400, special_tokens=[EOT])
    assert tok.vocab_size == 400 and tok.special_tokens == {EOT: 399}
    assert not any(b"<|" in piece or b"|>" in piece for piece in tok.vocab.values())
    assert tok.encode("a" + EOT + "b") == [97, 399, 98]


def test_unicode_is_bytes(tok):
    ids = tok.encode_ordinary("é€👋")
    assert ids == list("é€👋".encode("utf-8"))  # 2 + 3 + 4 bytes, never merged in English docs
    assert tok.decode(ids[:1]) == "\ufffd"       # half a character is not a character


def test_decode_accepts_a_tensor(tok):
    ids = tok.encode("hello world")
    assert tok.decode(torch.tensor(ids)) == "hello world"


# --- bad input ---------------------------------------------------------------------------------

def test_bad_input_is_refused_with_the_argument_named(tok):
    with pytest.raises(ValueError, match=r"text must be a non-empty string.*got ''"):
        BPETokenizer.train("", 300)
    with pytest.raises(ValueError, match=r"text must be a non-empty string"):
        train_bpe("", 300)
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 256 \(the 256 byte tokens.*got 100"):
        train_bpe("hello", 100)
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 257 \(the 256 byte tokens \+ 1 special token.*got 256"):
        BPETokenizer.train("hello", 256, special_tokens=[EOT])
    with pytest.raises(ValueError, match=r"ids must be token ids of this tokenizer \(0\.\.456\); got unknown ids \[457, -1\]"):
        tok.decode([104, 457, -1])
    with pytest.raises(ValueError, match="vocab_size must be at most 457"):
        tok.truncated(500)
    with pytest.raises(ValueError, match=r"merges must only use ids defined before them"):
        BPETokenizer([(97, 300)])
    with pytest.raises(ValueError, match="text must be a str"):
        tok.encode(b"bytes")


# --- SentencePiece -----------------------------------------------------------------------------

def test_sentencepiece_unigram_trains_quietly_and_round_trips(corpus, capfd):
    sp = train_sentencepiece(corpus.train[:60_000], 400)
    assert sp.get_piece_size() == 400
    assert capfd.readouterr().err == ""  # quiet: no training log
    line = "The for statement iterates over a sequence: café, 42 €."
    assert sp.decode(sp.encode(line)) == line
    pieces = sp.encode(corpus.val[:5_000])
    assert len(pieces) < 0.8 * len(corpus.val[:5_000].encode("utf-8"))  # 141 learned pieces already help


@pytest.mark.parametrize("vocab_size", [100, 266, 268, 5000, 260.0, True])
def test_sentencepiece_refuses_sizes_outside_the_text_s_range_and_names_it(vocab_size):
    # "hello world": 8 distinct characters + 256 bytes + 3 control pieces = 267 pieces at least,
    # and SentencePiece finds nothing more to learn in it, so 267 is also the most.
    expected = r"vocab_size must be an int (>= 267|in \[267, 267\] for this text) \(.*8 characters.*got "
    with pytest.raises(ValueError, match=expected):
        train_sentencepiece("hello world", vocab_size)
    assert train_sentencepiece("hello world", 267).get_piece_size() == 267


def test_sentencepiece_range_on_a_real_text(corpus):
    text = corpus.train[:20_000]
    n_chars = len(set(text.replace("\n", "")))
    with pytest.raises(ValueError, match=rf"vocab_size must be an int >= {n_chars + 259} \({n_chars} characters"):
        train_sentencepiece(text, n_chars + 258)
    assert train_sentencepiece(text, n_chars + 259).get_piece_size() == n_chars + 259
    with pytest.raises(ValueError, match=rf"vocab_size must be an int in \[{n_chars + 259}, \d+\] for this text"):
        train_sentencepiece(text, 50_000)


def test_pattern_chunks_never_merge_across_words(tok):
    # With the split pattern, no token spans a letter followed by a space (" the" yes, "e " never).
    assert not any(re.search(rb"[a-z] ", piece) for piece in tok.vocab.values())
