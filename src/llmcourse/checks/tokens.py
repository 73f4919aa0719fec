"""Checks for exercises/02_tokens.ipynb: pair counts, a merge step, encoding, decoding, compression.

Each check calls the student's function on inputs it makes itself (seeded: the hidden tests use
other seeds) and compares with the library's byte-level BPE (`llmcourse.tokenizers`), naming the
classic mistakes: overlapping replacement, merges in the wrong order, decoding token by token.
"""
from __future__ import annotations

import random
from collections.abc import Mapping

from llmcourse.checks.core import CheckFailure, call, compare, fail, passed
from llmcourse.tokenizers import BPETokenizer, get_stats, merge, train_bpe

WORDS = ["the", "token", "tokens", "then", "other", "café", "naïve", "über", "€5", "a", "an", "and", "at"]


def _ids(seed: int) -> list[int]:
    """A list of small ids with repeats and a run of three equal ids (so overlapping pairs matter)."""
    rng = random.Random(seed)
    ids = [rng.randrange(5) for _ in range(14 + seed % 7)]
    at = rng.randrange(len(ids))
    return [5] + ids[:at] + [3, 3, 3] + ids[at:]  # 5 only once: the first pair differs from the last


def _text(seed: int, n_words: int = 40) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _as_pair_dict(got):
    if isinstance(got, Mapping):
        return {tuple(k) if isinstance(k, list) else k: v for k, v in got.items()}
    return got


def _non_overlapping_stats(ids):
    counts = {}
    for i in range(0, len(ids) - 1, 2):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def q1(get_stats_fn, seed: int = 0) -> None:
    """Count neighbouring pairs: {(a, b): count}, overlapping pairs included."""
    ids = _ids(seed)
    got = _as_pair_dict(call("q1", get_stats_fn, list(ids)))
    expected = get_stats(ids)
    compare("q1", got, expected, name=f"get_stats({ids})", mistakes=[
        ("counted non-overlapping pairs only (positions 0-1, 2-3, ...); every neighbouring pair counts, "
         "so (3, 3, 3) holds (3, 3) twice", _non_overlapping_stats(ids)),
        ("recorded only whether a pair occurs (every count 1), not how often", {p: 1 for p in expected}),
        ("missed the last pair: the loop should run to len(ids) - 1", get_stats(ids[:-1])),
        ("missed the first pair: start at index 0", get_stats(ids[1:])),
    ], hint="zip(ids, ids[1:]) gives every neighbouring pair; add 1 to that pair's count")
    for edge in ([], [7]):
        compare("q1", _as_pair_dict(call("q1", get_stats_fn, list(edge))), {}, name=f"get_stats({edge})",
                hint="a list with fewer than two ids has no pairs: return an empty dict")
    passed("q1", f"{len(expected)} distinct pairs counted, overlaps included")


def _merge_forgot_to_skip(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        out.append(new_id if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair else ids[i])
        i += 1
    return out


def _merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def q2(merge_fn, seed: int = 0) -> None:
    """One BPE merge step: replace each pair, left to right, without overlap."""
    ids = _ids(seed)
    stats = get_stats(ids)
    top = min(stats, key=lambda p: (-stats[p], p))
    cases = [(ids, top, 99), ([7, 7, 7, 7, 7], (7, 7), 256), ([1, 2, 1, 2, 1], (1, 2), 300),
             ([4, 1, 4], (1, 2), 301)]
    for case_ids, pair, new_id in cases:
        given = list(case_ids)
        got = call("q2", merge_fn, given, pair, new_id)
        if isinstance(got, tuple):
            got = list(got)
        compare("q2", got, merge(case_ids, pair, new_id), name=f"merge({case_ids}, {pair}, {new_id})", mistakes=[
            ("overlapping replacement: after replacing a pair, skip both of its ids (i += 2); "
             "[7, 7, 7] with (7, 7) becomes [256, 7], not [256, 256]", _merge_forgot_to_skip(case_ids, pair, new_id)),
            ("the last id was dropped: when the loop stops at len(ids) - 1, append the final id too",
             _merge_drops_last(case_ids, pair, new_id)),
        ], hint="walk with an index i: on a match append new_id and jump i += 2, else append ids[i] and i += 1")
        if given != case_ids:
            fail("q2", "merge changed the list it was given", "build and return a new list")
    passed("q2", "pairs replaced left to right, no overlaps: [7, 7, 7, 7, 7] -> [256, 256, 7]")


def _merge_table(seed: int, n_merges: int = 24) -> tuple[str, list[tuple[int, int]]]:
    train_text = _text(seed + 1000, 200)
    return train_text, train_bpe(train_text, 256 + n_merges, pattern=None)


def _apply_in_order(ids, ordered_merges):
    for pair, new_id in ordered_merges:
        ids = merge(ids, pair, new_id)
    return ids


def q3(encode_fn, seed: int = 0) -> None:
    """Encode text with a merge table: UTF-8 bytes, then merges in rank order (the order they were learned)."""
    _, learned = _merge_table(seed)
    ranked = [(pair, 256 + i) for i, pair in enumerate(learned)]
    shuffled = list(ranked)
    random.Random(seed).shuffle(shuffled)
    merges = dict(shuffled)                        # handed over in no particular order
    text = _text(seed, 12)
    got = call("q3", encode_fn, text, dict(merges))
    if isinstance(got, tuple):
        got = list(got)
    expected = BPETokenizer(learned, pattern=None).encode_ordinary(text)
    raw = list(text.encode("utf-8"))
    compare("q3", got, expected, name=f"encode({text[:30]!r}…)", mistakes=[
        ("applied the merges in the dict's order; apply them in rank order, smallest new id first "
         "(a merge may build on the tokens of an earlier one)", _apply_in_order(raw, shuffled)),
        ("applied the merges in reverse rank order (largest new id first); the smallest new id was learned first",
         _apply_in_order(raw, ranked[::-1])),
        ("started from characters (ord) instead of UTF-8 bytes: 'é' is two bytes, [195, 169]",
         _apply_in_order([ord(c) for c in text], ranked)),
        ("returned the UTF-8 bytes without applying any merge", raw),
    ], hint="ids = list(text.encode('utf-8')); then for each (pair, new_id) sorted by new_id: ids = merge(ids, pair, new_id)")
    passed("q3", f"{len(text)} characters -> {len(raw)} bytes -> {len(expected)} tokens")


def q4(decode_fn, seed: int = 0) -> None:
    """Decode ids: join the tokens' bytes, then decode UTF-8 once, with errors='replace'."""
    train_text, learned = _merge_table(seed)
    tok = BPETokenizer(learned, pattern=None)
    vocab = dict(tok.vocab)                       # id -> bytes
    text = _text(seed + 7, 8)
    ids = tok.encode_ordinary(text) + list(" €".encode("utf-8")) + tok.encode_ordinary(" naïve") + [0x80]
    # ' €' as single-byte tokens (the euro sign's 3 bytes in 3 tokens); 0x80 alone is not valid UTF-8
    try:
        got = call("q4", decode_fn, list(ids), dict(vocab))
    except CheckFailure as failure:
        if isinstance(failure.__cause__, UnicodeDecodeError):
            fail("q4", f"decoding raised UnicodeDecodeError: {failure.__cause__}",
                 "a token sequence can end mid-character or hold invalid bytes; decode with errors='replace'")
        raise
    joined = b"".join(vocab[i] for i in ids)
    expected = joined.decode("utf-8", errors="replace")
    compare("q4", got, expected, name="the decoded text", mistakes=[
        ("decoded token by token: a character whose bytes sit in two tokens ('€' = 3 bytes here) turns into "
         "'\ufffd'; join all the bytes first, then decode once",
         "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)),
        ("used errors='ignore', which silently drops invalid bytes; errors='replace' shows them as '\ufffd'",
         joined.decode("utf-8", errors="ignore")),
        ("decoded each token as one character (chr(id)); tokens are bytes, and ids above 255 are merges",
         "".join(chr(i) for i in ids)),
    ], hint="b''.join(vocab[i] for i in ids).decode('utf-8', errors='replace')")
    passed("q4", f"{len(ids)} tokens -> {len(joined)} bytes -> {len(expected)} characters, '€' intact")


def q5(compression_ratio_fn, seed: int = 0) -> None:
    """Compression ratio: UTF-8 bytes of the text per token (higher = fewer tokens for the same text)."""
    _, learned = _merge_table(seed)
    tok = BPETokenizer(learned, pattern=None)
    text = _text(seed + 3, 30)
    ids = tok.encode_ordinary(text)
    got = call("q5", compression_ratio_fn, text, list(ids))
    n_bytes = len(text.encode("utf-8"))
    compare("q5", got, n_bytes / len(ids), name="the compression ratio", mistakes=[
        ("inverted: that is tokens per byte; the ratio is bytes / tokens", len(ids) / n_bytes),
        ("counted characters, not UTF-8 bytes ('é' and '€' are several bytes each)", len(text) / len(ids)),
        ("integer division (//) rounds the ratio down; use /", n_bytes // len(ids)),
    ], rtol=1e-9, atol=1e-12, hint="len(text.encode('utf-8')) / len(ids)")
    passed("q5", f"{n_bytes} bytes in {len(ids)} tokens: {n_bytes / len(ids):.3f} bytes per token")


def q6(vocabulary_parameters_fn, seed: int = 0) -> None:
    """Parameters a vocabulary costs: the embedding table (V x d), plus the output matrix (d x V) unless tied."""
    rng = random.Random(seed)
    cases = [(256_000, 2048, True), (256_000, 4096, False),
             (rng.randrange(300, 60_000), rng.choice([64, 128, 768]), bool(seed % 2))]
    for V, d, tied in cases:
        got = call("q6", vocabulary_parameters_fn, V, d, tied)
        expected = V * d * (1 if tied else 2)
        compare("q6", got, expected, name=f"vocabulary_parameters({V:,}, {d}, tied={tied})", mistakes=[
            ("forgot the output matrix: without tying, the model has its own (d_model x vocab_size) "
             "matrix to score every token", V * d) if not tied else
            ("counted the output matrix twice: tied means the output layer reuses the embedding table", 2 * V * d),
            ("added vocab_size and d_model; a table has one row of d_model numbers per token", V + d),
        ], hint="one row of d_model numbers per token: vocab_size * d_model, times 2 if not tied")
    passed("q6", f"a 256,000-token vocabulary at width 2048 costs {256_000 * 2048:,} parameters (tied)")
