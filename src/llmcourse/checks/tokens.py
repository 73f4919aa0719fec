"""Checks for exercises/02_tokens.ipynb: BPE training on word counts, encoding, decoding, compression.

Each check calls the student's function on inputs it makes itself (seeded: the hidden tests use
other seeds) and compares with the library's byte-level BPE (`llmcourse.tokenizers`), naming the
classic mistakes: word counts ignored, ties broken the other way, merges across word boundaries,
merges in the wrong order, decoding token by token. The wrong versions the checks recognise are
functions of this module (`train_ignoring_counts`, ...), which the tests reuse.
"""
from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Mapping

from llmcourse.checks.core import (CheckFailure, answered, call, choice, compare, fail, hint_giver, measured, passed,
                                   requires)
from llmcourse.data import python_docs
from llmcourse.tokenizers import BPETokenizer, merge, split_text, train_bpe

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "build", "q4": "experiment", "q5": "interpret",
                  "q6": "interpret"}

HINTS = {
    "q1": ("Work on the distinct words, each as a list of byte ids, and let a word that occurs 9,000 times "
           "count 9,000 times when you count pairs.",
           "Each round: count every neighbouring pair over all words, weighted by the word's count; take the "
           "most frequent pair (ties: the smallest pair); replace it by the next new id (256, 257, ...) in "
           "every word; remember the pair.",
           "Shape of the code: words as lists of ids and a parallel list of counts; a loop over new ids "
           "256 .. 256 + n_merges - 1 that builds a dict of pair counts (stop if it is empty), picks "
           "min(counts, key=...) with a key of (minus the count, the pair), and rebuilds every word with "
           "llmcourse.tokenizers.merge."),
    "q2": ("A merge table only makes sense in the order it was learned: a later merge may use a token "
           "an earlier merge made.",
           "Start from the UTF-8 bytes of the text; sort the (pair, new_id) items by new_id; apply each "
           "merge to the whole list of ids in turn.",
           "Shape of the code: ids from text.encode('utf-8'); a for loop over the items sorted with a key "
           "that picks the new id; inside it, ids = merge(ids, pair, new_id)."),
    "q3": ("A character can be several bytes, and those bytes can sit in different tokens.",
           "Look up each id's bytes in vocab, join them all into one bytes object, and only then decode "
           "UTF-8, asking for invalid bytes to be replaced rather than raising.",
           "One line: b''.join over the looked-up bytes, then .decode with the encoding and the errors "
           "argument set to 'replace'."),
    "q4": ("Train once with the largest number of merges: the first n merges of that run are exactly what "
           "a run with n merges learns.",
           "Learn the merges from word_counts; for each n in N_MERGES, encode the "
           "validation text with the first n merges (as a {pair: 256 + i} dict) and divide its UTF-8 bytes "
           "by the number of tokens.",
           "compression = {n: len(val_text.encode('utf-8')) / len(encode(val_text, table_n)) for n in "
           "N_MERGES}, with table_n built from merges[:n]."),
    "q5": ("Compare two gains: from 0 merges (1 byte per token) to 200, and from 200 to 400.",
           "compression[200] - 1.0 is what the first 200 merges bought; compression[400] - compression[200] "
           "what the next 200 bought."),
}
hint = hint_giver(HINTS)

WORDS = ["the", "token", "tokens", "then", "other", "café", "naïve", "über", "€5", "a", "an", "and", "at"]
N_MERGES = [50, 100, 200, 400]
GAINS = ["more", "about as much", "less"]


def experiment_texts() -> tuple[str, str]:
    """The experiment's training text (20,000 characters) and validation text (5,000), from the course corpus."""
    corpus = python_docs()
    return corpus.train[:20_000], corpus.val[:5_000]


def _text(seed: int, n_words: int = 40) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# --- q1: training on word counts ----------------------------------------------------------------

def train_on_words(word_counts: Mapping[str, int], n_merges: int, *, weighted: bool = True,
                   ties_to_largest: bool = False) -> list[tuple[int, int]]:
    """BPE on a table of word counts; `weighted=False` and `ties_to_largest=True` are classic mistakes."""
    words = [list(word.encode("utf-8")) for word in word_counts]
    counts = [count if weighted else 1 for count in word_counts.values()]
    merges = []
    for new_id in range(256, 256 + n_merges):
        stats: dict[tuple[int, int], int] = {}
        for ids, count in zip(words, counts):
            for pair in zip(ids, ids[1:]):
                stats[pair] = stats.get(pair, 0) + count
        if not stats:
            break
        if ties_to_largest:
            pair = max(stats, key=lambda p: (stats[p], p))
        else:
            pair = min(stats, key=lambda p: (-stats[p], p))
        words = [merge(ids, pair, new_id) for ids in words]
        merges.append(pair)
    return merges


def train_across_words(word_counts: Mapping[str, int], n_merges: int) -> list[tuple[int, int]]:
    """The classic mistake of gluing all the words into one text: merges then cross word boundaries."""
    glued = "".join(word * count for word, count in word_counts.items())
    return train_bpe(glued, 256 + n_merges, pattern=None)


def _as_pairs(got):
    if isinstance(got, tuple):
        got = list(got)
    if isinstance(got, list):
        return [tuple(p) if isinstance(p, list) else p for p in got]
    return got


def q1(train_bpe_words, seed: int = 0) -> None:
    """BPE training on word counts: merges in the order learned, equal to the library's train_bpe."""
    text = _text(seed + 1000, 300)
    word_counts = dict(Counter(split_text(text)))
    n_merges = 20
    got = _as_pairs(call("q1", train_bpe_words, dict(word_counts), n_merges))
    if isinstance(got, Mapping):
        fail("q1", "returned a dict; return the list of merged pairs in the order they were learned "
                   "(merge i created id 256 + i)")
    expected = train_bpe(text, 256 + n_merges)   # the library, from the text itself
    compare("q1", got, expected, name=f"the {n_merges} merges learned from {len(word_counts)} distinct words",
            mistakes=[
                ("every distinct word counted once: a word that occurs 30 times must add 30 to each of its pairs",
                 train_on_words(word_counts, n_merges, weighted=False)),
                ("ties broken towards the largest pair; the course breaks ties towards the smallest pair "
                 "(min over (-count, pair)), so every trainer agrees", train_on_words(word_counts, n_merges,
                                                                                     ties_to_largest=True)),
                ("the words were glued into one text, so pairs across word boundaries were counted and merged; "
                 "BPE merges inside words only", train_across_words(word_counts, n_merges)),
            ])
    small = call("q1", train_bpe_words, {"ab": 3, "b": 5}, 4)
    compare("q1", _as_pairs(small), [(97, 98)], name="train_bpe_words({'ab': 3, 'b': 5}, 4)",
            hint="after 'ab' is merged, every word is a single token: no pair is left, so stop early")
    passed("q1", f"{n_merges} merges equal to the library's train_bpe, first ones "
                 f"{[bytes(p).decode('utf-8', 'replace') if max(p) < 256 else p for p in expected[:3]]}")


# --- q2: encode ----------------------------------------------------------------------------------

def _merge_table(seed: int, n_merges: int = 24) -> tuple[str, list[tuple[int, int]]]:
    train_text = _text(seed + 1000, 200)
    return train_text, train_bpe(train_text, 256 + n_merges, pattern=None)


def _apply_in_order(ids, ordered_merges):
    for pair, new_id in ordered_merges:
        ids = merge(ids, pair, new_id)
    return ids


def q2(encode_fn, seed: int = 0) -> None:
    """Encode text with a merge table: UTF-8 bytes, then merges in rank order (the order they were learned)."""
    _, learned = _merge_table(seed)
    ranked = [(pair, 256 + i) for i, pair in enumerate(learned)]
    shuffled = list(ranked)
    random.Random(seed).shuffle(shuffled)
    merges = dict(shuffled)                        # handed over in no particular order
    text = _text(seed, 12)
    got = call("q2", encode_fn, text, dict(merges))
    if isinstance(got, tuple):
        got = list(got)
    expected = BPETokenizer(learned, pattern=None).encode_ordinary(text)
    raw = list(text.encode("utf-8"))
    compare("q2", got, expected, name=f"encode({text[:30]!r}…)", mistakes=[
        ("applied the merges in the dict's order; apply them in rank order, smallest new id first "
         "(a merge may build on the tokens of an earlier one)", _apply_in_order(raw, shuffled)),
        ("applied the merges in reverse rank order (largest new id first); the smallest new id was learned first",
         _apply_in_order(raw, ranked[::-1])),
        ("started from characters (ord) instead of UTF-8 bytes: 'é' is two bytes, [195, 169]",
         _apply_in_order([ord(c) for c in text], ranked)),
        ("returned the UTF-8 bytes without applying any merge", raw),
    ], hint="start from the UTF-8 bytes and apply the merges one after another, smallest new id first")
    passed("q2", f"{len(text)} characters -> {len(raw)} bytes -> {len(expected)} tokens")


# --- q3: decode ----------------------------------------------------------------------------------

def q3(decode_fn, seed: int = 0) -> None:
    """Decode ids: join the tokens' bytes, then decode UTF-8 once, with errors='replace'."""
    train_text, learned = _merge_table(seed)
    tok = BPETokenizer(learned, pattern=None)
    vocab = dict(tok.vocab)                       # id -> bytes
    text = _text(seed + 7, 8)
    ids = tok.encode_ordinary(text) + list(" €".encode("utf-8")) + tok.encode_ordinary(" naïve") + [0x80]
    # ' €' as single-byte tokens (the euro sign's 3 bytes in 3 tokens); 0x80 alone is not valid UTF-8
    try:
        got = call("q3", decode_fn, list(ids), dict(vocab))
    except CheckFailure as failure:
        if isinstance(failure.__cause__, UnicodeDecodeError):
            fail("q3", f"decoding raised UnicodeDecodeError: {failure.__cause__}",
                 "a token sequence can end mid-character or hold invalid bytes; decode with errors='replace'")
        raise
    joined = b"".join(vocab[i] for i in ids)
    expected = joined.decode("utf-8", errors="replace")
    compare("q3", got, expected, name="the decoded text", mistakes=[
        ("decoded token by token: a character whose bytes sit in two tokens ('€' = 3 bytes here) turns into "
         "'\ufffd'; join all the bytes first, then decode once",
         "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)),
        ("used errors='ignore', which silently drops invalid bytes; errors='replace' shows them as '\ufffd'",
         joined.decode("utf-8", errors="ignore")),
        ("decoded each token as one character (chr(id)); tokens are bytes, and ids above 255 are merges",
         "".join(chr(i) for i in ids)),
    ], hint="join the bytes of all the tokens first, then decode once, replacing invalid bytes")
    passed("q3", f"{len(ids)} tokens -> {len(joined)} bytes -> {len(expected)} characters, '€' intact")


# --- q4: the experiment: compression against the number of merges -----------------------------

def _table(merges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    return {pair: 256 + i for i, pair in enumerate(merges)}


def compression_by_merges(train_text: str, val_text: str, on: str = "val") -> dict[int, float]:
    """The check's own run: UTF-8 bytes per token of the validation (or training) text, per number of merges."""
    merges = train_bpe(train_text, 256 + max(N_MERGES))
    text = val_text if on == "val" else train_text
    out = {}
    for n in N_MERGES:
        out[n] = len(text.encode("utf-8")) / len(_apply_in_order(list(text.encode("utf-8")),
                                                                   list(_table(merges[:n]).items())))
    return out


@functools.lru_cache(maxsize=1)
def _own_run() -> tuple[dict[int, float], dict[int, float]]:
    """The experiment as the check runs it (once per session): on the validation and on the training text."""
    train_text, val_text = experiment_texts()
    return compression_by_merges(train_text, val_text), compression_by_merges(train_text, val_text, on="train")


def q4(compression, train_bpe_words, encode) -> None:
    """Bytes per token of the validation text after 50, 100, 200 and 400 merges learned from the training text."""
    requires("q4", "q1", "train_bpe_words", lambda: q1(train_bpe_words))
    requires("q4", "q2", "encode", lambda: q2(encode))
    answered("q4", compression, "compression")
    if not isinstance(compression, Mapping) or sorted(compression) != N_MERGES:
        keys = sorted(compression) if isinstance(compression, Mapping) else type(compression).__name__
        fail("q4", f"`compression` should be a dict with the keys N_MERGES = {N_MERGES}; got {keys}")
    _, val_text = experiment_texts()
    expected, on_train = _own_run()
    n_chars = len(val_text) / len(val_text.encode("utf-8"))
    for n in N_MERGES:
        measured("q4", compression[n], expected[n], tolerance=0.005, name=f"compression[{n}]",
                 what=f"bytes per token of the validation text after {n} merges", mistakes=[
                     ("measured on the training text; compression on the text the merges were learned from is "
                      "flattering, measure on val_text", on_train[n]),
                     ("inverted: tokens per byte; the ratio is bytes / tokens", 1 / expected[n]),
                     ("counted characters, not UTF-8 bytes", expected[n] * n_chars),
                 ])
    passed("q4", "bytes per token on the validation text: "
                 + ", ".join(f"{n} merges {expected[n]:.3f}" for n in N_MERGES))


def q5(second_200_gain) -> None:
    """Do the merges 200 -> 400 buy more, about as much, or less compression than the first 200?"""
    answered("q5", second_200_gain, "second_200_gain")
    expected, _ = _own_run()
    first, second = expected[200] - 1.0, expected[400] - expected[200]
    verdict = "more" if second > 1.2 * first else "less" if second < 0.8 * first else "about as much"
    choice("q5", second_200_gain, verdict, name="second_200_gain", options=GAINS, why_not={
        "more": f"the first 200 merges took the text from 1 to {expected[200]:.2f} bytes per token, the next 200 "
                f"only to {expected[400]:.2f}",
        "about as much": f"the first 200 merges gained {first:.2f} bytes per token, the next 200 {second:.2f}",
    })
    passed("q5", f"the first 200 merges gain {first:.2f} bytes per token, the next 200 only {second:.2f}: "
                 "the most frequent pairs are merged first")
