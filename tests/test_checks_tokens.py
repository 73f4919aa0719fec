"""The unit 02 checks: they pass correct answers and name the classic mistakes."""
from collections import Counter

import pytest

from llmcourse.checks import CheckFailure
from llmcourse.checks import tokens as check
from llmcourse.checks.tokens import train_across_words, train_on_words  # the wrong versions the check knows
from llmcourse.tokenizers import merge as good_merge  # the library's merge is the reference solution
from llmcourse.tokenizers import split_text

SEEDS = (0, 11, 12, 21, 31)


# --- correct answers, written the way a student would ------------------------------------------

def good_train_bpe_words(word_counts, n_merges):
    words = {tuple(w.encode("utf-8")): c for w, c in word_counts.items()}
    merges = []
    for new_id in range(256, 256 + n_merges):
        stats = Counter()
        for ids, count in words.items():
            for pair in zip(ids, ids[1:]):
                stats[pair] += count
        if not stats:
            break
        pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))
        words = {tuple(good_merge(list(ids), pair, new_id)): c for ids, c in words.items()}
        merges.append(pair)
    return merges


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


@pytest.fixture(scope="module")
def measured_compression():
    train_text, val_text = check.experiment_texts()
    merges = good_train_bpe_words(dict(Counter(split_text(train_text))), max(check.N_MERGES))
    n_bytes = len(val_text.encode("utf-8"))
    return {n: n_bytes / len(good_encode(val_text, {p: 256 + i for i, p in enumerate(merges[:n])}))
            for n in check.N_MERGES}


def test_correct_answers_pass(capsys, measured_compression):
    for seed in SEEDS:
        check.q1(good_train_bpe_words, seed=seed)
        check.q2(good_encode, seed=seed)
        check.q2(good_encode_by_lowest_rank, seed=seed)
        check.q3(good_decode, seed=seed)
    check.q4(measured_compression, good_train_bpe_words, good_encode)
    check.q5("less")
    assert capsys.readouterr().out.count("✓") == 4 * len(SEEDS) + 2


# --- each classic mistake is named -------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("func,message", [
    (lambda wc, n: train_on_words(wc, n, weighted=False), "every distinct word counted once"),
    (lambda wc, n: train_on_words(wc, n, ties_to_largest=True), "ties broken towards the largest pair"),
    (train_across_words, "glued into one text"),
    (lambda wc, n: {p: 256 + i for i, p in enumerate(train_on_words(wc, n))}, "returned a dict"),
    (lambda wc, n: train_on_words(wc, n)[:-1], r"the 20 merges learned from \d+ distinct words should be"),
])
def test_q1_names_the_mistake(func, message, seed):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func, seed=seed)


def test_q1_must_stop_when_no_pair_is_left():
    def never_stops(word_counts, n_merges):
        merges = train_on_words(word_counts, n_merges)
        return merges + [merges[-1]] * (n_merges - len(merges))
    with pytest.raises(CheckFailure, match="no pair is left, so stop early"):
        check.q1(never_stops)


def encode_in_dict_order(text, merges):
    ids = list(text.encode("utf-8"))
    for pair, new_id in merges.items():
        ids = good_merge(ids, pair, new_id)
    return ids


def encode_reversed(text, merges):
    return check._apply_in_order(list(text.encode("utf-8")), sorted(merges.items(), key=lambda item: -item[1]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("func,message", [
    (encode_in_dict_order, "in the dict's order"),
    (encode_reversed, "reverse rank order"),
    (lambda text, merges: check._apply_in_order([ord(c) for c in text], sorted(merges.items(), key=lambda i: i[1])),
     "characters \\(ord\\) instead of UTF-8 bytes"),
    (lambda text, merges: list(text.encode("utf-8")), "without applying any merge"),
])
def test_q2_names_the_mistake(func, message, seed):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("func,message", [
    (lambda ids, vocab: "".join(vocab[i].decode("utf-8", errors="replace") for i in ids), "decoded token by token"),
    (lambda ids, vocab: b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore"), "errors='ignore'"),
    (lambda ids, vocab: b"".join(vocab[i] for i in ids).decode("utf-8"), "(?s)raised UnicodeDecodeError.*errors='replace'"),
    (lambda ids, vocab: "".join(chr(i) for i in ids), r"chr\(id\)"),
])
def test_q3_names_the_mistake(func, message, seed):
    with pytest.raises(CheckFailure, match=message):
        check.q3(func, seed=seed)


def test_q4_names_the_mistake(measured_compression):
    on_train = check._own_run()[1]
    cases = [
        (None, "not answered yet"),
        ([1.0, 2.0], "should be a dict with the keys"),
        (on_train, "measured on the training text"),
        ({n: 1 / r for n, r in measured_compression.items()}, "inverted"),
        ({n: r * 1.02 for n, r in measured_compression.items()}, r"own run of this experiment gives .*±0.005"),
    ]
    for answer, message in cases:
        with pytest.raises(CheckFailure, match=message):
            check.q4(answer, good_train_bpe_words, good_encode)
    with pytest.raises(CheckFailure, match="(?s)^q4: this fails because your `encode` from q2.*dict's order"):
        check.q4(measured_compression, good_train_bpe_words, encode_in_dict_order)
    with pytest.raises(CheckFailure, match="^q4: this fails because your `train_bpe_words` from q1"):
        check.q4(measured_compression, train_across_words, good_encode)


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"), ("more", "only to"),
                                            ("about as much", "gained"), ("fewer", "should be one of")])
def test_q5_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(answer)
