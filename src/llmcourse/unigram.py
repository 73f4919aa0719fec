"""The unigram language-model tokenizer (Kudo, 2018), trained from scratch on a toy.

BPE (unit 02) *builds* its vocabulary up, one merge at a time. The unigram method *prunes* a
big vocabulary down, and it has a training objective you can write on one line. Each piece x of
the vocabulary has a probability p(x); a segmentation s = (s_1, ..., s_k) of a word has probability
p(s_1) ... p(s_k); and the word's probability sums over **all** its segmentations:

    P(word) = sum over segmentations s of  prod_i p(s_i)
    training maximises  L = sum over words  count(word) * log P(word)

    "hug" with pieces {h, u, g, hu, ug}:  P = p(h)p(u)p(g) + p(hu)p(g) + p(h)p(ug)

Training alternates three steps:

* E-step: the *forward algorithm* sums all segmentations in one pass over the word, and the
  backward pass gives each piece's expected number of uses (`expected_counts`);
* M-step: p(x) = expected count of x / total expected count (`em_step`);
* pruning: drop the pieces whose removal lowers L the least (single characters always stay, so
  every word keeps a segmentation) (`prune`).

Encoding a word uses only its single most likely segmentation, found by the Viterbi algorithm
(`viterbi`): the same pass as the forward algorithm, with max in place of sum.

SentencePiece is a toolkit that implements this method (and BPE); its unigram model stores log p(x)
as each piece's score, so `viterbi` with those scores reproduces its segmentations.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

LogProbs = dict[str, float]   # piece -> log p(piece)
CHARACTER_FLOOR = 1e-3        # the smallest expected count a single character is given


def _check_words(words: dict[str, int]) -> None:
    if not isinstance(words, dict) or not words:
        raise ValueError(f"words must be a non-empty dict {{word: count}}; got {words!r:.60}")
    for word, count in words.items():
        if not isinstance(word, str) or not word or not isinstance(count, int) or count < 1:
            raise ValueError(f"words must map non-empty strings to positive int counts; got {word!r}: {count!r}")


def seed_vocabulary(words: dict[str, int], max_piece_length: int = 4) -> LogProbs:
    """A big starting vocabulary: every substring of up to max_piece_length characters, with
    log p proportional to how often it occurs.

        {"hug": 1}, 2  ->  h, u, g, hu, ug   (each log(1/5))
    """
    _check_words(words)
    counts: Counter[str] = Counter()
    for word, count in words.items():
        for i in range(len(word)):
            for j in range(i + 1, min(len(word), i + max_piece_length) + 1):
                counts[word[i:j]] += count
    total = sum(counts.values())
    return {piece: math.log(n / total) for piece, n in counts.items()}


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _pieces_ending_at(word: str, end: int, log_probs: LogProbs, longest: int):
    """(start, piece) for every vocabulary piece that ends at position `end` of the word."""
    for start in range(max(0, end - longest), end):
        piece = word[start:end]
        if piece in log_probs:
            yield start, piece


def forward(word: str, log_probs: LogProbs) -> list[float]:
    """alpha[i] = log of the summed probability of all segmentations of word[:i]; alpha[len] = log P(word).

    alpha[0] = 0;  alpha[i] = logsumexp over pieces word[j:i] of alpha[j] + log p(word[j:i]).
    """
    longest = max(map(len, log_probs))
    alpha = [0.0] + [-math.inf] * len(word)
    for end in range(1, len(word) + 1):
        for start, piece in _pieces_ending_at(word, end, log_probs, longest):
            alpha[end] = _logaddexp(alpha[end], alpha[start] + log_probs[piece])
    return alpha


def backward(word: str, log_probs: LogProbs) -> list[float]:
    """beta[i] = log of the summed probability of all segmentations of word[i:]; beta[0] = log P(word)."""
    longest = max(map(len, log_probs))
    beta = [-math.inf] * len(word) + [0.0]
    for start in range(len(word) - 1, -1, -1):   # each piece word[start:end] extends beta[end] back to start
        for end in range(start + 1, min(len(word), start + longest) + 1):
            piece = word[start:end]
            if piece in log_probs:
                beta[start] = _logaddexp(beta[start], log_probs[piece] + beta[end])
    return beta


def all_segmentations(word: str, vocabulary) -> list[list[str]]:
    """Every way to cut `word` into pieces of the vocabulary (exponentially many: for toys and tests).

        "hug", {h, u, g, hu, ug}  ->  [[h, u, g], [h, ug], [hu, g]]
    """
    if not word:
        return [[]]
    return [[word[:i], *rest] for i in range(1, len(word) + 1) if word[:i] in vocabulary
            for rest in all_segmentations(word[i:], vocabulary)]


def log_likelihood(words: dict[str, int], log_probs: LogProbs) -> float:
    """The training objective L = sum over words of count(word) * log P(word), in nats."""
    return sum(count * forward(word, log_probs)[-1] for word, count in words.items())


def expected_counts(words: dict[str, int], log_probs: LogProbs) -> tuple[dict[str, float], float]:
    """E-step: how often each piece is used, averaged over all segmentations weighted by probability.

    A piece word[j:i] is used with probability exp(alpha[j] + log p + beta[i] - log P(word)).
    Returns ({piece: expected count}, L).
    """
    _check_words(words)
    longest = max(map(len, log_probs))
    counts: dict[str, float] = defaultdict(float)
    total = 0.0
    for word, count in words.items():
        alpha, beta = forward(word, log_probs), backward(word, log_probs)
        if alpha[-1] == -math.inf:
            raise ValueError(f"the vocabulary cannot segment {word!r}: keep every single character in it")
        total += count * alpha[-1]
        for end in range(1, len(word) + 1):
            for start, piece in _pieces_ending_at(word, end, log_probs, longest):
                counts[piece] += count * math.exp(alpha[start] + log_probs[piece] + beta[end] - alpha[-1])
    return dict(counts), total


def em_step(words: dict[str, int], log_probs: LogProbs) -> tuple[LogProbs, float]:
    """One E-step and M-step: p(x) = expected count of x / sum of all expected counts.

    Returns the new log-probabilities and L *before* the step. A longer piece that is never used
    is dropped; a single character always stays (with a pseudo-count of CHARACTER_FLOOR if unused),
    so that every word can still be segmented.
    """
    counts, total = expected_counts(words, log_probs)
    counts = {piece: c for piece, c in counts.items() if c > 0 or len(piece) == 1}
    counts = {piece: max(c, CHARACTER_FLOOR) if len(piece) == 1 else c for piece, c in counts.items()}
    n = sum(counts.values())
    return {piece: math.log(c / n) for piece, c in counts.items()}, total


def prune(words: dict[str, int], log_probs: LogProbs, keep: int) -> LogProbs:
    """Keep the `keep` pieces whose removal would cost the most likelihood (and every single character).

    The cost of removing piece x: L(vocabulary) - L(vocabulary without x, renormalised), computed
    exactly (fine for a toy; SentencePiece estimates it from each piece's best alternative).
    """
    base = log_likelihood(words, log_probs)
    cost = {}
    for piece in log_probs:
        if len(piece) == 1:
            continue
        rest = {x: lp for x, lp in log_probs.items() if x != piece}
        norm = math.log(sum(math.exp(lp) for lp in rest.values()))
        cost[piece] = base - log_likelihood(words, {x: lp - norm for x, lp in rest.items()})
    characters = [x for x in log_probs if len(x) == 1]
    kept = sorted(cost, key=cost.get, reverse=True)[:max(0, keep - len(characters))]
    chosen = {x: log_probs[x] for x in characters + kept}
    norm = math.log(sum(math.exp(lp) for lp in chosen.values()))
    return {x: lp - norm for x, lp in chosen.items()}


def train_unigram(words: dict[str, int], vocab_size: int, *, max_piece_length: int = 4, em_steps: int = 3,
                  shrink: float = 0.75) -> tuple[LogProbs, list[dict]]:
    """Train a unigram tokenizer: seed vocabulary, then (EM steps, prune to shrink x size) until vocab_size.

    Returns the final log-probabilities and a history row per round: vocabulary size and L.
    """
    _check_words(words)
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be between 0 and 1 (the share of pieces kept per round); got {shrink!r}")
    log_probs = seed_vocabulary(words, max_piece_length)
    n_characters = sum(len(x) == 1 for x in log_probs)
    if vocab_size < n_characters:
        raise ValueError(f"vocab_size must be at least the number of distinct characters ({n_characters}); "
                         f"got {vocab_size}")
    history = []
    while True:
        for _ in range(em_steps):
            log_probs, _ = em_step(words, log_probs)
        history.append({"vocab_size": len(log_probs), "log_likelihood": log_likelihood(words, log_probs)})
        if len(log_probs) <= vocab_size:
            return log_probs, history
        log_probs = prune(words, log_probs, max(vocab_size, int(len(log_probs) * shrink)))


def viterbi(word: str, log_probs: LogProbs) -> list[str]:
    """Encode: the single most likely segmentation (the forward algorithm with max in place of sum).

        "hug", log p = {h: -3, u: -3, g: -3, hu: -2, ug: -4}  ->  ["hu", "g"]   (-5 beats -6 and -7)
    """
    if not word:
        return []
    longest = max(map(len, log_probs))
    best = [0.0] + [-math.inf] * len(word)        # best[i]: log p of the best segmentation of word[:i]
    back = [0] * (len(word) + 1)                  # back[i]: where its last piece starts
    for end in range(1, len(word) + 1):
        for start, piece in _pieces_ending_at(word, end, log_probs, longest):
            score = best[start] + log_probs[piece]
            if score > best[end]:
                best[end], back[end] = score, start
    if best[-1] == -math.inf:
        raise ValueError(f"the vocabulary cannot segment {word!r}")
    pieces, end = [], len(word)
    while end > 0:
        pieces.append(word[back[end]:end])
        end = back[end]
    return pieces[::-1]
