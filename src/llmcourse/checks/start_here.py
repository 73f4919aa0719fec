"""Checks for exercises/00_start_here.ipynb: shapes, softmax, probabilities that sum to one.

Each check takes the student's function, calls it on inputs it makes itself (seeded, so the same
input every run; the hidden tests use other seeds), and compares with a trusted reference.
"""
from __future__ import annotations

import torch

from llmcourse.checks.core import call, compare, fail, passed


def _random_logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows, cols = 2 + seed % 4, 4 + seed % 5
    return torch.randn(rows, cols, generator=g, dtype=torch.float64) * scale  # (rows, vocab)


def q1(batch_shape) -> None:
    """Shape of a batch of 4 texts x 10 tokens x 16 embedding numbers: (batch, time, channels)."""
    got = call("q1", batch_shape)
    if isinstance(got, (list, torch.Size)):
        got = tuple(got)
    compare("q1", got, (4, 10, 16), name="the shape", mistakes=[
        ("time before batch: the course puts the batch axis first, (batch, time, channels)", (10, 4, 16)),
        ("channels before time: each token's 16 numbers come last", (4, 16, 10)),
    ], hint="one row per text, one position per token, one number per embedding dimension")
    passed("q1", "a batch is (batch, time, channels) = (4, 10, 16)")


def q2(softmax, seed: int = 0) -> None:
    """softmax over the last axis, equal to torch.softmax; stable for large logits."""
    logits = _random_logits(seed)
    got = call("q2", softmax, logits.clone())
    compare("q2", got, torch.softmax(logits, dim=-1), name="softmax(logits)", mistakes=[
        ("softmax over the wrong axis (dim 0); each row is one distribution, so normalise over the last axis (dim=-1)",
         torch.softmax(logits, dim=0)),
        ("normalised over the whole tensor instead of each row; use .sum(dim=-1, keepdim=True)",
         logits.exp() / logits.exp().sum()),
        ("divided the logits by their sum without exponentiating them first", logits / logits.sum(-1, keepdim=True)),
    ])
    big = logits * 300  # logits of several hundred: exp() overflows unless the max is subtracted
    got = call("q2", softmax, big.clone())
    compare("q2", got, torch.softmax(big, dim=-1), name="softmax of large logits (hundreds)",
            hint="exp(1000) overflows to inf; subtract each row's maximum first: softmax(z) = softmax(z - max z)")
    if not torch.equal(logits, logits.clone()):
        fail("q2", "your softmax changed its input in place", "compute a new tensor instead of modifying logits")
    passed("q2", "matches torch.softmax(dim=-1), also for logits in the hundreds")


def q3(normalise, seed: int = 0) -> None:
    """Counts (integers) -> probabilities along the last axis: non-negative, summing to one."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 20, (3 + seed % 3, 6), generator=g)  # (contexts, vocab)
    counts[:, 0] += 1  # no all-zero row
    got = call("q3", normalise, counts.clone())
    expected = counts.double() / counts.sum(-1, keepdim=True)
    compare("q3", got, expected, name="the probabilities", mistakes=[
        ("integer division: counts // total rounds every probability down to 0",
         counts // counts.sum(-1, keepdim=True)),
        ("divided by the largest count instead of the total", counts / counts.amax(-1, keepdim=True)),
        ("normalised over the wrong axis (dim 0); each row is one distribution", counts / counts.sum(0, keepdim=True)),
    ], hint="divide each row by its own total so that every row sums to 1")
    passed("q3", "every row is a probability distribution: non-negative and summing to 1")


def q4(most_likely, seed: int = 0) -> None:
    """The most likely next token (a string) and its probability (a float)."""
    vocab = ["the", "cat", "sat", "on", "mat", "."]
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(len(vocab), generator=g, dtype=torch.float64) * 2, dim=-1)  # (vocab,)
    got = call("q4", most_likely, probs.clone(), list(vocab))
    best = int(probs.argmax())
    if not (isinstance(got, tuple) and len(got) == 2):
        fail("q4", f"expected a pair (token, probability), got {got!r}", "return token, probability")
    token, p = got
    if isinstance(token, (int, torch.Tensor)) and not isinstance(token, str):
        fail("q4", f"the token should be a string from vocab, got the index {token!r}",
             "look the index up in vocab: vocab[index]")
    compare("q4", token, vocab[best], name="the most likely token",
            mistakes=[("picked the least likely token (argmin instead of argmax)", vocab[int(probs.argmin())])])
    compare("q4", float(p) if isinstance(p, torch.Tensor) else p, float(probs[best]), name="its probability",
            hint="return probs[index] as a float: float(probs[index])")
    passed("q4", f"the most likely next token is {vocab[best]!r} with probability {float(probs[best]):.3f}")
