"""Checks for exercises/01_language_models.ipynb: counting, the chain rule, cross-entropy and
perplexity, sampling with a seeded generator, add-k smoothing, and the entropy floor.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds) and compares with a trusted reference: the library's `NGramModel`, PyTorch, or the
exact entropy rate of `MarkovSource`.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.data import MarkovSource, entropy, random_markov_source
from llmcourse.ngram import NGramModel


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


def q3(perplexity, seed: int = 0) -> None:
    """perplexity = exp(mean per-token loss in nats)."""
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(50, generator=g, dtype=torch.float64) * 4  # (tokens,) per-token losses in nats
    got = _as_float(call("q3", perplexity, losses.clone()))
    expected = math.exp(losses.mean().item())
    compare("q3", got, expected, name="the perplexity", rtol=1e-6, mistakes=[
        ("averaged exp(loss) over tokens; perplexity is exp of the AVERAGE loss (exp of the mean, not the mean of exp)",
         losses.exp().mean().item()),
        ("exponentiated the total loss; use the mean per token", math.exp(losses.sum().item())),
        ("used 2 ** mean; that is for losses in bits, and these are in nats", 2 ** losses.mean().item()),
        ("exp(-mean loss): the loss is already a negative log-probability", math.exp(-losses.mean().item())),
        ("returned the mean loss without exponentiating it", losses.mean().item()),
    ], hint="perplexity = exp(cross-entropy), and the cross-entropy is the mean loss per token")
    passed("q3", f"perplexity = exp(mean loss) = {expected:.3f}")


def q4(cross_entropy, seed: int = 0) -> None:
    """H(p, q) = -sum_i p_i log q_i in nats, with 0 * log 0 = 0."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64) * 2, -1)
    q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), -1)
    got = _as_float(call("q4", cross_entropy, p.clone(), q.clone()))
    expected = float(-(p * q.log()).sum())
    # trusted route: PyTorch's cross-entropy with soft targets
    assert math.isclose(expected, float(torch.nn.functional.cross_entropy(q.log()[None], p[None])), rel_tol=1e-9)
    compare("q4", got, expected, name="H(p, q)", rtol=1e-6, mistakes=[
        ("swapped p and q: the true distribution p weights the model's log-probabilities log q",
         float(-(q * p.log()).sum())),
        ("left out the minus sign: -sum p log q is positive", -expected),
        ("used log base 2 (bits); use the natural log (nats)", expected / math.log(2)),
        ("computed the entropy of p, -sum p log p; the cross-entropy uses log q", float(entropy(p))),
        ("computed the KL divergence, H(p, q) - H(p)", expected - float(entropy(p))),
    ], hint="H(p, q) = -(p * q.log()).sum()")
    # a model that gives probability 0 to a token that never happens: 0 * log 0 must count as 0
    p0, q0 = p.clone(), q.clone()
    p0[0], q0[0] = 0.0, 0.0
    p0, q0 = p0 / p0.sum(), q0 / q0.sum()
    got = _as_float(call("q4", cross_entropy, p0.clone(), q0.clone()))
    expected0 = float(-torch.special.xlogy(p0, q0).sum())
    compare("q4", got, expected0, name="H(p, q) when p and q are both 0 for one token", rtol=1e-6,
            hint="0 * log 0 is nan in floating point; a term with p_i = 0 contributes 0: use "
                 "torch.special.xlogy(p, q) or torch.where(p > 0, p * q.log(), 0)")
    passed("q4", f"H(p, q) = {expected:.4f} nats, and tokens with p = 0 contribute nothing")


def q5(sample_bigram, seed: int = 0) -> None:
    """Sample n tokens from a bigram model, reproducibly: the same generator seed, the same tokens."""
    V = 4
    P = _chain(seed + 7, V)  # (vocab, vocab), with impossible moves
    start = seed % V

    def run(gen_seed: int, n: int) -> torch.Tensor:
        out = call("q5", sample_bigram, P.clone(), start, n, torch.Generator().manual_seed(gen_seed))
        if isinstance(out, list):
            out = torch.tensor(out)
        if not isinstance(out, torch.Tensor):
            fail("q5", f"expected a tensor of {n} token ids, got {type(out).__name__}", "return torch.tensor(tokens)")
        if out.shape != (n,):
            fail("q5", f"expected shape ({n},) (the n new tokens, without the start token), got {tuple(out.shape)}")
        if out.is_floating_point():
            fail("q5", f"expected integer token ids, got dtype {out.dtype}", "torch.multinomial returns int64 ids")
        return out.long()

    a, b = run(100 + seed, 60), run(100 + seed, 60)
    if not torch.equal(a, b):
        fail("q5", "two runs with generators of the same seed gave different tokens: the sample is not reproducible",
             "pass the generator to every random call: torch.multinomial(probs, 1, generator=generator)")
    if torch.equal(a, run(200 + seed, 60)):
        fail("q5", "generators with different seeds gave the same tokens: the generator is not used "
                   "(or you always pick the most likely token)",
             "draw each token with torch.multinomial(P[current], 1, generator=generator)")
    long = run(300 + seed, 3000)
    sequence = torch.cat([torch.tensor([start]), long])
    prev, nxt = sequence[:-1], sequence[1:]
    impossible = P[prev, nxt] == 0
    if impossible.any():
        i = int(impossible.nonzero()[0])
        fail("q5", f"your sample has a move the model forbids: {int(prev[i])} -> {int(nxt[i])} has probability 0",
             "draw the next token from the ROW of the current token, P[current], and update current each step")
    freq = torch.zeros(V, V, dtype=torch.float64)
    freq.index_put_((prev, nxt), torch.ones(len(prev), dtype=torch.float64), accumulate=True)
    freq = freq / freq.sum(-1, keepdim=True).clamp_min(1)
    worst = float((freq - P).abs().max())
    if worst > 0.08:
        fail("q5", f"over 3000 tokens the share of each move differs from P by up to {worst:.2f}",
             "each token should be drawn from P[current]; check the row you sample from")
    passed("q5", "same seed, same tokens; different seed, different tokens; moves follow P")


def q6(add_k, seed: int = 0) -> None:
    """Add-k smoothing: (counts + k) / (row total + k * vocab)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 6, (4, 7), generator=g)  # (contexts, vocab)
    counts[1] = 0  # a context never seen
    k = [0.5, 1.0, 0.1][seed % 3]
    got = call("q6", add_k, counts.clone(), k)
    V = counts.shape[1]
    c, total = counts.double(), counts.sum(-1, keepdim=True).double()
    expected = (c + k) / (total + k * V)
    compare("q6", got, expected, name="the smoothed probabilities", mistakes=[
        ("added k to the counts but only k (not k * vocab) to the total, so rows do not sum to 1",
         (c + k) / (total + k)),
        ("added k * vocab to the total but not k to each count", c / (total + k * V)),
        ("used k * (number of contexts) instead of k * vocab in the total", (c + k) / (total + k * counts.shape[0])),
        ("normalised over the wrong axis (columns)", (c + k) / (c + k).sum(0, keepdim=True)),
    ], hint="every token gets k extra (imaginary) counts, so the row total grows by k * vocab")
    passed("q6", f"add-{k:g} smoothing: every row sums to 1, an unseen context is uniform")


def q7(entropy_rate, seed: int = 0) -> None:
    """Entropy rate of a first-order Markov chain: sum_c pi_c * H(P[c]), in nats per token."""
    P = _chain(seed + 3, 5)  # (vocab, vocab) with one impossible move per row
    source = MarkovSource(alphabet="abcde", order=1, next_probs=P)
    pi = source.stationary()
    got = _as_float(call("q7", entropy_rate, P.clone(), pi.clone()))
    expected = source.entropy_rate()
    rows = entropy(P)  # (vocab,) entropy of each row
    if isinstance(got, float) and math.isnan(got):
        fail("q7", "the entropy rate is nan", "some P[c, t] are 0, and 0 * log 0 is nan in floating point; "
             "count those terms as 0: torch.special.xlogy(P, P) or torch.where(P > 0, P * P.log(), 0)")
    compare("q7", got, expected, name="the entropy rate", rtol=1e-6, mistakes=[
        ("a plain mean of the row entropies; weight each row by how often its context occurs, pi",
         float(rows.mean())),
        ("the entropy of pi, the share of each token: that ignores the context; the floor is the uncertainty "
         "about what comes NEXT once you know the context",
         float(entropy(pi))),
        ("used log base 2 (bits); use the natural log (nats)", expected / math.log(2)),
        ("a negative entropy: H = -sum p log p", -expected),
    ], hint="H = sum over contexts c of pi[c] * H(P[c]), with H(p) = -sum p log p and 0 log 0 = 0")
    passed("q7", f"entropy rate = {expected:.4f} nats/token: no model can average a lower loss on this source")
