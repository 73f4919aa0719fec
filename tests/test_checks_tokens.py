"""The unit 02 checks: they pass correct answers and name the classic mistakes."""
from collections import Counter

import pytest

from llmcourse.checks import CheckFailure
from llmcourse.checks import tokens as check
from llmcourse.tokenizers import merge as good_merge  # the library's merge is the reference solution

SEEDS = (0, 11, 12, 21, 31)


# --- correct answers, written the way a student would ------------------------------------------

def good_get_stats(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def good_encode(text, merges):
    ids = list(text.encode("utf-8"))
    for pair, new_id in sorted(merges.items(), key=lambda item: item[1]):
        ids = good_merge(ids, pair, new_id)
    return ids


def good_encode_by_lowest_rank(text, merges):
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = good_merge(ids, pair, merges[pair])
    return ids


def good_decode(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def test_correct_answers_pass(capsys):
    for seed in SEEDS:
        check.q1(good_get_stats, seed=seed)
        check.q1(lambda ids: Counter(zip(ids, ids[1:])), seed=seed)
        check.q2(good_merge, seed=seed)
        check.q3(good_encode, seed=seed)
        check.q3(good_encode_by_lowest_rank, seed=seed)
        check.q4(good_decode, seed=seed)
        check.q5(lambda text, ids: len(text.encode("utf-8")) / len(ids), seed=seed)
        check.q6(lambda V, d, tied: V * d if tied else 2 * V * d, seed=seed)
    assert capsys.readouterr().out.count("✓") == 8 * len(SEEDS)


# --- each classic mistake is named -------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("func,message", [
    (lambda ids: Counter(zip(ids[::2], ids[1::2])), "non-overlapping pairs only"),
    (lambda ids: {p: 1 for p in zip(ids, ids[1:])}, "every count 1"),
    (lambda ids: Counter(zip(ids, ids[1:-1])), "missed the last pair"),
    (lambda ids: Counter(zip(ids[1:], ids[2:])), "missed the first pair"),
    (lambda ids: dict(Counter(zip(ids, ids[1:])).most_common(2)), r"get_stats\(\[.*\]\) should be \{"),
])
def test_q1_names_the_mistake(func, message, seed):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func, seed=seed)


def test_q1_empty_input():
    with pytest.raises(CheckFailure, match="fewer than two ids has no pairs"):
        check.q1(lambda ids: Counter(zip(ids, ids[1:])) if ids else None)


def merge_forgot_to_skip(ids, pair, new_id):
    return [new_id if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair else x for i, x in enumerate(ids)]


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, new_id):
    ids[:] = good_merge(ids, pair, new_id)
    return ids


@pytest.mark.parametrize("func,message", [
    (merge_forgot_to_skip, "overlapping replacement"),
    (merge_drops_last, "the last id was dropped"),
    (merge_in_place, "changed the list it was given"),
    (lambda ids, pair, new_id: [new_id if x == pair[0] else x for x in ids], r"merge\(.*\) should be"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


def encode_in_dict_order(text, merges):
    ids = list(text.encode("utf-8"))
    for pair, new_id in merges.items():
        ids = good_merge(ids, pair, new_id)
    return ids


def encode_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for pair, new_id in sorted(merges.items(), key=lambda item: -item[1]):
        ids = good_merge(ids, pair, new_id)
    return ids


def encode_from_chars(text, merges):
    ids = [ord(c) for c in text]
    for pair, new_id in sorted(merges.items(), key=lambda item: item[1]):
        ids = good_merge(ids, pair, new_id)
    return ids


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("func,message", [
    (encode_in_dict_order, "in the dict's order"),
    (encode_reversed, "reverse rank order"),
    (encode_from_chars, "characters \\(ord\\) instead of UTF-8 bytes"),
    (lambda text, merges: list(text.encode("utf-8")), "without applying any merge"),
])
def test_q3_names_the_mistake(func, message, seed):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("func,message", [
    (lambda ids, vocab: "".join(vocab[i].decode("utf-8", errors="replace") for i in ids), "decoded token by token"),
    (lambda ids, vocab: b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore"), "errors='ignore'"),
    (lambda ids, vocab: b"".join(vocab[i] for i in ids).decode("utf-8"), "(?s)raised UnicodeDecodeError.*errors='replace'"),
    (lambda ids, vocab: "".join(chr(i) for i in ids), r"chr\(id\)"),
])
def test_q4_names_the_mistake(func, message, seed):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func, seed=seed)


@pytest.mark.parametrize("func,message", [
    (lambda text, ids: len(ids) / len(text.encode("utf-8")), "inverted"),
    (lambda text, ids: len(text) / len(ids), "counted characters"),
    (lambda text, ids: len(text.encode("utf-8")) // len(ids), "integer division"),
])
def test_q5_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)


@pytest.mark.parametrize("func,message", [
    (lambda V, d, tied: V * d, "forgot the output matrix"),
    (lambda V, d, tied: 2 * V * d, "counted the output matrix twice"),
    (lambda V, d, tied: V + d, "added vocab_size and d_model"),
])
def test_q6_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q6(func)


def test_stub_and_crash_are_reported_with_the_question():
    def stub(*args):
        raise NotImplementedError("count with zip(ids, ids[1:])")

    for n in range(1, 7):
        with pytest.raises(CheckFailure, match=rf"^q{n}: stub is not implemented yet"):
            getattr(check, f"q{n}")(stub)
    with pytest.raises(CheckFailure, match=r"q3: <lambda> raised ZeroDivisionError"):
        check.q3(lambda text, merges: 1 / 0)
