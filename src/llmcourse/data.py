"""Text to learn from, with nothing to download.

Two sources:

* `python_docs()`: real English prose, the Python documentation topics (the text `help()`
  prints), shipped with the package and split into training and validation text.
* `MarkovSource`: a synthetic language whose next-token probabilities we choose ourselves, so its
  *entropy rate* (the lowest average loss, in nats per token, that any model can reach on it) is
  a number we can compute exactly. Every loss curve in the course can be drawn against that floor.
"""
from __future__ import annotations

import bisect
import gzip
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from llmcourse.validate import check_int, check_number

CORPUS_LICENCE = ("Python documentation, Copyright (c) 2001-2023 Python Software Foundation; "
                  "Python Software Foundation License Version 2")


@dataclass(frozen=True)
class Corpus:
    """A text corpus split into training and validation text."""

    name: str
    train: str
    val: str
    licence: str

    @property
    def text(self) -> str:
        return self.train + self.val


@lru_cache(maxsize=1)
def python_doc_topics() -> dict[str, str]:
    """The 79 Python help topics, {topic name: text}, as shipped with the package."""
    blob = resources.files("llmcourse").joinpath("datafiles/python_docs.json.gz").read_bytes()
    return json.loads(gzip.decompress(blob))["topics"]


def python_docs(val_fraction: float = 0.1) -> Corpus:
    """The Python documentation as one text (topics in name order), split train/validation.

    The last `val_fraction` of the text, cut at a paragraph break, is the validation text: the
    model never trains on it, so its loss there measures generalisation (465k characters, 103
    distinct characters in all).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive); got {val_fraction!r}")
    text = "\n\n".join(python_doc_topics().values())
    cut = text.find("\n\n", int(len(text) * (1 - val_fraction)))
    cut = cut + 2 if cut != -1 else int(len(text) * (1 - val_fraction))
    return Corpus(name="python-docs", train=text[:cut], val=text[cut:], licence=CORPUS_LICENCE)


def entropy(probs: torch.Tensor, dim: int = -1, *, base: float = math.e) -> torch.Tensor:
    """Shannon entropy H(p) = -sum_i p_i log p_i over axis `dim`, with 0 log 0 taken as 0.

    base e (the default): nats; base=2: bits. exp(entropy in nats) is the *effective number of
    choices*: a uniform distribution over that many tokens would be exactly as unpredictable.

    >>> entropy(torch.tensor([0.5, 0.5, 0.0]))      # ln 2: a fair coin; the impossible token adds 0
    tensor(0.6931)
    >>> entropy(torch.tensor([0.5, 0.5, 0.0]), base=2)
    tensor(1.)
    """
    logs = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))   # finite even where p = 0
    h = -(probs * logs).where(probs > 0, torch.zeros_like(probs)).sum(dim)
    h = h.abs()  # each term -p log p >= 0; abs() only turns -0.0 into 0.0
    return h / math.log(base) if base != math.e else h


@dataclass(frozen=True)
class MarkovSource:
    """A Markov source of order k over a small alphabet, with an exactly known entropy rate.

    The next token depends only on the previous `order` tokens (the *context*). Contexts are
    numbered in base `len(alphabet)`: the context "ba" over "abc" is 1*3 + 0 = 3.
    next_probs: (n_contexts, vocab) float64, row c = P(next token | context c).
    """

    alphabet: str
    order: int
    next_probs: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    @property
    def n_contexts(self) -> int:
        return self.vocab_size ** self.order

    def context_transitions(self) -> torch.Tensor:
        """(n_contexts, n_contexts): probability of moving from context c to context c'."""
        V, C = self.vocab_size, self.n_contexts
        T = torch.zeros(C, C, dtype=torch.float64)
        for c in range(C):
            for token in range(V):
                T[c, (c * V + token) % C] += self.next_probs[c, token]  # drop the oldest token
        return T

    def stationary(self) -> torch.Tensor:
        """(n_contexts,): the long-run share of time spent in each context (pi = pi T)."""
        T = self.context_transitions()
        # pi is the left eigenvector of T for eigenvalue 1: (T^T - I) pi = 0. One of those C equations
        # is redundant, so replace the last by the normalisation sum(pi) = 1 and solve exactly.
        C = self.n_contexts
        A = T.T - torch.eye(C, dtype=torch.float64)
        A[-1] = 1.0
        b = torch.zeros(C, dtype=torch.float64)
        b[-1] = 1.0
        pi = torch.linalg.solve(A, b)
        return pi.clamp_min(0) / pi.clamp_min(0).sum()

    def entropy_rate(self) -> float:
        """The entropy rate in nats per token: H = sum_c pi_c * H(P(. | c)).

        No model of this source, however large, can have a lower expected cross-entropy.
        """
        return float((self.stationary() * entropy(self.next_probs)).sum())

    def sample(self, n_tokens: int, seed: int = 0) -> torch.Tensor:
        """(n_tokens,) int64: a sample of the source, started from its stationary distribution."""
        if n_tokens < self.order + 1:
            raise ValueError(f"n_tokens must be at least order + 1 = {self.order + 1}; got {n_tokens}")
        rng = np.random.default_rng(seed)
        V, k = self.vocab_size, self.order
        start = int(rng.choice(self.n_contexts, p=self.stationary().numpy()))
        tokens = [(start // V ** (k - 1 - i)) % V for i in range(k)]
        # Inverse-CDF sampling: the next token is the first whose cumulative probability
        # exceeds a uniform draw u.
        cumulative = np.cumsum(self.next_probs.numpy(), axis=1).tolist()
        context = start
        for u in rng.random(n_tokens - k).tolist():
            token = min(bisect.bisect_right(cumulative[context], u), V - 1)
            tokens.append(token)
            context = (context * V + token) % self.n_contexts  # drop the oldest token
        return torch.tensor(tokens, dtype=torch.long)

    def log_likelihoods(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n_tokens - order,): log P(token_t | the `order` tokens before it), in nats."""
        V, k = self.vocab_size, self.order
        windows = tokens.unfold(0, k + 1, 1)  # (n - k, k + 1): context then next token
        weights = V ** torch.arange(k - 1, -1, -1)
        contexts = (windows[:, :k] * weights).sum(1)
        return torch.log(self.next_probs[contexts, windows[:, k]])

    def decode(self, tokens: torch.Tensor) -> str:
        return "".join(self.alphabet[t] for t in tokens.tolist())

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - set(self.alphabet))
        if unknown:
            raise ValueError(f"text has characters outside the alphabet {self.alphabet!r}: {unknown}")
        return torch.tensor([self.alphabet.index(ch) for ch in text], dtype=torch.long)


def random_markov_source(alphabet: str = "abcdefgh", order: int = 2,
                         concentration: float = 0.3, seed: int = 0) -> MarkovSource:
    """A Markov source with next-token probabilities drawn from a Dirichlet distribution.

    Small `concentration` gives peaked rows (a predictable source, low entropy rate); large
    gives nearly uniform rows (entropy rate near log(len(alphabet))). Every probability is
    kept above zero, so every context can follow every other and the chain is ergodic.
    """
    check_int(order, "order")
    if len(alphabet) < 2 or len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet must have at least 2 distinct characters; got {alphabet!r}")
    check_number(concentration, "concentration", above=0)
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([concentration] * len(alphabet), size=len(alphabet) ** order)
    probs = np.maximum(probs, 1e-4)
    probs /= probs.sum(1, keepdims=True)
    return MarkovSource(alphabet=alphabet, order=order, next_probs=torch.from_numpy(probs))
