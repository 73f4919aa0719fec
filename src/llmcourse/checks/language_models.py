"""Checks for exercises/01_language_models.ipynb: counting, the chain rule, sampling with a seeded
generator, the entropy floor, and an add-k smoothing experiment measured against that floor.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds) and compares with a trusted reference: the library's `NGramModel`, PyTorch, or the
exact entropy rate of `MarkovSource`.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checks.core import answered, call, choice, compare, fail, hint_giver, measured, passed
from llmcourse.data import MarkovSource, entropy, random_markov_source
from llmcourse.ngram import NGramModel

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "build", "q4": "build", "q5": "experiment",
                  "q6": "interpret", "q7": "interpret"}

HINTS = {
    "q1": ("Count how often each pair (previous, next) occurs in the text, then turn each row of counts "
           "into a distribution.",
           "A (vocab, vocab) table of zeros; add 1 at [ids[i], ids[i + 1]] for every i (index_put_ with "
           "accumulate=True does all pairs at once); divide each row by its total.",
           "Shape of the code: counts = zeros(V, V, float64); counts.index_put_((previous ids, next ids), "
           "ones, accumulate=True); return counts divided by counts.sum over the last axis with keepdim=True."),
    "q2": ("By the chain rule the log-probability of a sequence is a sum: the first token's, then each "
           "token's given the one before it.",
           "Look up first_probs at the first id, and P at the pairs (ids[:-1], ids[1:]) all at once with "
           "advanced indexing; take logs and add everything up."),
    "q3": ("Each new token is drawn from the row of P that belongs to the token before it; then it becomes "
           "the token before the next one.",
           "Loop n times: draw one id from P[current] with torch.multinomial(..., 1, generator=generator), "
           "append it, make it current; return the ids as an int64 tensor."),
    "q4": ("The floor is the average uncertainty about the next token once you know the previous one: the "
           "entropy of each row of P, weighted by how often that row's token occurs.",
           "Row entropies: minus the sum over the last axis of P ln P, with 0 ln 0 = 0 (torch.special.xlogy); "
           "then the sum of pi times those entropies."),
    "q5": ("For each k: count the pairs of train_ids, smooth them with add-k, and score val_ids with the "
           "result (never fit on val_ids).",
           "Smoothed P = (counts + k) / (row totals + k * vocab); the validation loss is the mean of "
           "-log P[val_ids[:-1], val_ids[1:]] in nats.",
           "validation_loss = {k: that mean, as a float} for k in KS; the counts are the same for every k, "
           "only the smoothing changes."),
    "q6": ("The source is first order: the previous token is all the context there is. So what is left that "
           "a bigram model could lack?",
           "Compare your best validation loss with source.entropy_rate(); then imagine (or try) 100 times "
           "more training text."),
}
hint = hint_giver(HINTS)

KS = [0.001, 0.01, 0.1, 1.0, 10.0]
N_TRAIN, N_VAL = 300, 5_000
GAP_REASONS = ["too little context", "too little training text", "smoothing cannot help"]


def experiment_data() -> tuple[MarkovSource, torch.Tensor, torch.Tensor]:
    """The q5 experiment's source (first order, 6 letters) and its training and validation samples."""
    source = random_markov_source(alphabet="abcdef", order=1, concentration=0.3, seed=3)
    return source, source.sample(N_TRAIN, seed=1), source.sample(N_VAL, seed=2)


def _tokens(seed: int, vocab: int = 5, n: int = 120) -> torch.Tensor:
    """(n,) ids from a first-order Markov source, in which every token appears as a context."""
    source = random_markov_source(alphabet="abcdefgh"[:vocab], order=1, concentration=1.0, seed=seed)
    ids = source.sample(n, seed=seed)
    missing = [t for t in range(vocab) if t not in ids[:-1].tolist()]
    return torch.cat([torch.tensor(missing, dtype=torch.long), ids])


def _as_float(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return value


def _chain(seed: int, vocab: int = 4, zeros: bool = True) -> torch.Tensor:
    """(vocab, vocab) float64 transition matrix; with zeros=True some transitions are impossible."""
    g = torch.Generator().manual_seed(seed)
    P = torch.rand(vocab, vocab, generator=g, dtype=torch.float64) + 0.05
    if zeros:
        P[torch.arange(vocab), (torch.arange(vocab) + 1 + seed) % vocab] = 0.0  # one impossible move per row
    return P / P.sum(-1, keepdim=True)


def q1(bigram_probs, seed: int = 0) -> None:
    """Bigram counts -> probabilities: P[a, b] = count(a followed by b) / count(a followed by anything)."""
    ids = _tokens(seed)
    V = 5
    got = call("q1", bigram_probs, ids.clone(), V)
    expected = torch.stack([NGramModel.fit(ids, 2, vocab_size=V).next_token_probs([a]) for a in range(V)])
    counts = torch.zeros(V, V, dtype=torch.long)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.long), accumulate=True)
    wrap = counts.clone()
    wrap[ids[-1], ids[0]] += 1
    compare("q1", got, expected, name="the bigram probabilities P[a, b]", mistakes=[
        ("rows and columns swapped: P[a, b] should be P(next = b | previous = a), so count pairs as "
         "counts[ids[i], ids[i + 1]]", counts.T.double() / counts.T.sum(-1, keepdim=True)),
        ("normalised over the wrong axis (columns); each ROW is the distribution of what follows one token",
         counts.double() / counts.sum(0, keepdim=True)),
        ("the raw counts, not divided by the row totals", counts),
        ("integer division: counts // row totals rounds every probability down", counts // counts.sum(-1, keepdim=True)),
        ("counted a pair (last token, first token) that is not in the text: the pairs are ids[i], ids[i + 1] "
         "for i up to len(ids) - 2", wrap.double() / wrap.sum(-1, keepdim=True)),
    ], hint="count each pair (ids[i], ids[i+1]) into counts[ids[i], ids[i+1]], then divide each row by its sum")
    passed("q1", "every row is P(next | previous), equal to the library's bigram model")


def q2(sequence_log_prob, seed: int = 0) -> None:
    """log P(t_1 .. t_T) = log p(t_1) + sum_k log P[t_(k-1), t_k]  (the chain rule, for a bigram model)."""
    g = torch.Generator().manual_seed(seed)
    V = 5
    P = _chain(seed + 1, V, zeros=False)
    first = torch.softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    ids = torch.randint(0, V, (12,), generator=g)
    got = _as_float(call("q2", sequence_log_prob, ids.clone(), first.clone(), P.clone()))
    steps = P[ids[:-1], ids[1:]].log()
    expected = float(first[ids[0]].log() + steps.sum())
    # the same number by a trusted route: cross-entropy over the log-probabilities, times the length
    logits = torch.cat([first.log()[None], P[ids[:-1]].log()])  # (T, vocab)
    assert math.isclose(expected, -float(torch.nn.functional.cross_entropy(logits, ids, reduction="sum")), rel_tol=1e-9)
    compare("q2", got, expected, name="log P(sequence)", rtol=1e-6, mistakes=[
        ("left out the first token: the chain rule starts with log p(t_1) from first_probs", float(steps.sum())),
        ("returned the probability (a product), not its logarithm", math.exp(expected)),
        ("indexed P[next, previous]: row = previous token, column = next token", float(first[ids[0]].log() + P[ids[1:], ids[:-1]].log().sum())),
        ("averaged instead of summing: log P of a sequence is the SUM of the log-probabilities", expected / len(ids)),
        ("used log base 2; the course measures in nats (natural log)", expected / math.log(2)),
        ("returned -log P (the loss); the log-probability of a sequence is negative", -expected),
    ], hint="log P = log first_probs[ids[0]] + sum over k >= 1 of log P[ids[k-1], ids[k]]")
    passed("q2", f"the chain rule: log P(sequence) = {expected:.4f} nats")


def q3(sample_bigram, seed: int = 0) -> None:
    """Sample n tokens from a bigram model, reproducibly: the same generator seed, the same tokens."""
    V = 4
    P = _chain(seed + 7, V)  # (vocab, vocab), with impossible moves
    start = seed % V

    def run(gen_seed: int, n: int) -> torch.Tensor:
        out = call("q3", sample_bigram, P.clone(), start, n, torch.Generator().manual_seed(gen_seed))
        if isinstance(out, list):
            out = torch.tensor(out)
        if not isinstance(out, torch.Tensor):
            fail("q3", f"expected a tensor of {n} token ids, got {type(out).__name__}", "return torch.tensor(tokens)")
        if out.shape != (n,):
            fail("q3", f"expected shape ({n},) (the n new tokens, without the start token), got {tuple(out.shape)}")
        if out.is_floating_point():
            fail("q3", f"expected integer token ids, got dtype {out.dtype}", "torch.multinomial returns int64 ids")
        return out.long()

    a, b = run(100 + seed, 60), run(100 + seed, 60)
    if not torch.equal(a, b):
        fail("q3", "two runs with generators of the same seed gave different tokens: the sample is not reproducible",
             "pass the generator to every random call: torch.multinomial(probs, 1, generator=generator)")
    if torch.equal(a, run(200 + seed, 60)):
        fail("q3", "generators with different seeds gave the same tokens: the generator is not used "
                   "(or you always pick the most likely token)",
             "draw each token with torch.multinomial(P[current], 1, generator=generator)")
    long = run(300 + seed, 3000)
    sequence = torch.cat([torch.tensor([start]), long])
    prev, nxt = sequence[:-1], sequence[1:]
    impossible = P[prev, nxt] == 0
    if impossible.any():
        i = int(impossible.nonzero()[0])
        fail("q3", f"your sample has a move the model forbids: {int(prev[i])} -> {int(nxt[i])} has probability 0",
             "draw the next token from the ROW of the current token, P[current], and update current each step")
    freq = torch.zeros(V, V, dtype=torch.float64)
    freq.index_put_((prev, nxt), torch.ones(len(prev), dtype=torch.float64), accumulate=True)
    freq = freq / freq.sum(-1, keepdim=True).clamp_min(1)
    worst = float((freq - P).abs().max())
    if worst > 0.08:
        fail("q3", f"over 3000 tokens the share of each move differs from P by up to {worst:.2f}",
             "each token should be drawn from P[current]; check the row you sample from")
    passed("q3", "same seed, same tokens; different seed, different tokens; moves follow P")


def q4(entropy_rate, seed: int = 0) -> None:
    """Entropy rate of a first-order Markov chain: sum_c pi_c * H(P[c]), in nats per token."""
    P = _chain(seed + 3, 5)  # (vocab, vocab) with one impossible move per row
    source = MarkovSource(alphabet="abcde", order=1, next_probs=P)
    pi = source.stationary()
    got = _as_float(call("q4", entropy_rate, P.clone(), pi.clone()))
    expected = source.entropy_rate()
    rows = entropy(P)  # (vocab,) entropy of each row
    if isinstance(got, float) and math.isnan(got):
        fail("q4", "the entropy rate is nan", "some P[c, t] are 0, and 0 * log 0 is nan in floating point; "
             "count those terms as 0: torch.special.xlogy(P, P) or torch.where(P > 0, P * P.log(), 0)")
    compare("q4", got, expected, name="the entropy rate", rtol=1e-6, mistakes=[
        ("a plain mean of the row entropies; weight each row by how often its context occurs, pi",
         float(rows.mean())),
        ("the entropy of pi, the share of each token: that ignores the context; the floor is the uncertainty "
         "about what comes NEXT once you know the context",
         float(entropy(pi))),
        ("used log base 2 (bits); use the natural log (nats)", expected / math.log(2)),
        ("a negative entropy: H = -sum p log p", -expected),
    ], hint="H = sum over contexts c of pi[c] * H(P[c]), with H(p) = -sum p log p and 0 log 0 = 0")
    passed("q4", f"entropy rate = {expected:.4f} nats/token: no model can average a lower loss on this source")


def smoothed_validation_losses(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab: int,
                               on: str = "val") -> dict[float, float]:
    """The check's own run of q5: mean -log P(next | previous) in nats, add-k bigram fitted on train_ids."""
    counts = torch.zeros(vocab, vocab, dtype=torch.float64)
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1, dtype=torch.float64),
                      accumulate=True)
    ids = val_ids if on == "val" else train_ids
    losses = {}
    for k in KS:
        P = (counts + k) / (counts.sum(-1, keepdim=True) + k * vocab)
        losses[k] = float(-P[ids[:-1], ids[1:]].log().mean())
    return losses


def q5(validation_loss) -> None:
    """Validation loss (nats/token) of the add-k bigram for each k in KS."""
    answered("q5", validation_loss, "validation_loss")
    if not isinstance(validation_loss, dict) or sorted(validation_loss) != KS:
        keys = sorted(validation_loss) if isinstance(validation_loss, dict) else type(validation_loss).__name__
        fail("q5", f"`validation_loss` should be a dict with the keys KS = {KS}; got {keys}")
    source, train_ids, val_ids = experiment_data()
    expected = smoothed_validation_losses(train_ids, val_ids, source.vocab_size)
    on_train = smoothed_validation_losses(train_ids, val_ids, source.vocab_size, on="train")
    for k in KS:
        measured("q5", _as_float(validation_loss[k]), expected[k], tolerance=1e-3, name=f"validation_loss[{k}]",
                 what=f"add-{k:g} bigram fitted on train_ids, scored on val_ids", mistakes=[
                     ("scored the training text; a model must be judged on text it was not fitted to (val_ids)",
                      on_train[k]),
                     ("in bits (log2); measure in nats (natural log)", expected[k] / math.log(2)),
                 ], hint="P = (counts + k) / (row totals + k * vocab); loss = mean of -log P[val_ids[:-1], val_ids[1:]]")
    best = min(KS, key=expected.get)
    passed("q5", f"validation losses from {min(expected.values()):.3f} (k = {best:g}) to "
                 f"{max(expected.values()):.3f} nats; the floor is {source.entropy_rate():.3f}")


def q6(gap_reason) -> None:
    """Why the best add-k bigram stays above the entropy floor of a first-order source."""
    source, train_ids, val_ids = experiment_data()
    best = min(smoothed_validation_losses(train_ids, val_ids, source.vocab_size).values())
    more = source.sample(100 * N_TRAIN, seed=1)
    best_more = min(smoothed_validation_losses(more, val_ids, source.vocab_size).values())
    choice("q6", gap_reason, "too little training text", name="gap_reason", options=GAP_REASONS, why_not={
        "too little context": "the source is first order: the next token depends only on the previous one, "
                              "which a bigram model sees",
        "smoothing cannot help": "smoothing did help: compare the k in your q5 dict; and no choice of k "
                                 "turns 300 tokens into the true probabilities",
    })
    passed("q6", f"with {N_TRAIN} training tokens the best model scores {best:.3f} nats, with {100 * N_TRAIN:,} "
                 f"{best_more:.3f}, against a floor of {source.entropy_rate():.3f} (a 5,000-token validation "
                 "sample can land a little below it): the estimates, not the context, were the limit")
