"""Counting language models: the n-gram model.

A language model gives the probability of the next token from the tokens before it,
P(t_k | t_1, ..., t_(k-1)). An *n-gram* model keeps only the last n - 1 of them (its *context*)
and estimates the probability by counting, in a training text, what followed that context:

    P(w | h) = count(h, w) / count(h)          (the maximum-likelihood estimate, "MLE")

    "abab", order 2 (a bigram model):  counts {(a, b): 2, (b, a): 1}  ->  P(b | a) = 2/2 = 1

Every n-gram of the text is stored as one integer key, its tokens read as digits in base
`vocab_size` (tokens [2, 0, 1] over a vocabulary of 5 -> 2*25 + 0*5 + 1 = 51). Counting is then one
`torch.unique` over all sliding windows, and looking a context up is one `torch.searchsorted`, so
fitting order 6 on 400k characters takes a fraction of a second.

Three ways to handle what the training text never showed (the `smoothing` argument):

* "none": the plain counts. A token never seen after a context gets probability 0 (loss: infinite);
  a context never seen has no distribution at all, and asking for one is a ValueError.
* "add-k": pretend every token followed every context k more times (k = 1 is Laplace smoothing),
  P(w | h) = (count(h, w) + k) / (count(h) + k * vocab_size). An unseen context gets the uniform
  distribution.
* "interpolated": Witten-Bell interpolation. Mix the counts of the full context with the model
  of the context one token shorter, recursively down to the uniform distribution:
  P(w | h) = (count(h, w) + T(h) * P(w | h')) / (count(h) + T(h)), where T(h) is the number of
  distinct tokens seen after h and h' is h without its oldest token. An unseen context falls back
  to P(w | h'). No parameter to tune.

Usage::

    model = NGramModel.fit(ids, order=3, vocab_size=V, smoothing="add-k", k=0.1)
    model.next_token_probs([4, 7])         # (V,) P(next | ... 4, 7)
    model.cross_entropy(val_ids)           # nats per token
    model.sample(100, generator=torch.Generator().manual_seed(0), context=[4, 7])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llmcourse.tokenizers import CharTokenizer
from llmcourse.validate import check_int, check_number

SMOOTHINGS = ("none", "add-k", "interpolated")


def _as_ids(ids, name: str, vocab_size: int | None = None, allow_empty: bool = False) -> torch.Tensor:
    """Token ids (list or tensor) -> a 1-D int64 tensor, refusing anything else with a clear message."""
    if isinstance(ids, str):
        raise ValueError(f"{name} must be token ids (a list or 1-D tensor of ints), not a string; "
                         f"encode text with a tokenizer first (or use NGramModel.fit_text)")
    if not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(list(ids), dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids; got shape {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids; got dtype {ids.dtype}")
    if len(ids) == 0 and not allow_empty:
        raise ValueError(f"{name} must hold at least one token id; got an empty sequence")
    ids = ids.long().cpu()
    if vocab_size is not None and len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][:5].tolist()
        raise ValueError(f"{name} must be token ids in [0, {vocab_size}) (vocab_size = {vocab_size}); got {bad}")
    return ids


def ngram_keys(ids: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """(len(ids) - n + 1,) int64: each window of n tokens as one number in base `vocab_size`.

        ngram_keys(tensor([2, 0, 1, 3]), n=2, vocab_size=5) -> tensor([10, 1, 8])   # 2*5+0, 0*5+1, 1*5+3
    """
    windows = ids.unfold(0, n, 1)                                      # (positions, n)
    powers = vocab_size ** torch.arange(n - 1, -1, -1, dtype=torch.long)  # (n,) V^(n-1) ... V^0
    return (windows * powers).sum(dim=1)                               # (positions,)


def _find(keys: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each query sits in the sorted `keys`: (index, found), both shaped like `query`."""
    if len(keys) == 0:
        return torch.zeros_like(query), torch.zeros_like(query, dtype=torch.bool)
    idx = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
    return idx, keys[idx] == query


def _lookup(keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """values[i] where keys[i] == query (keys sorted), else 0. Same shape as `query`."""
    idx, found = _find(keys, query)
    return torch.where(found, values[idx], 0) if len(keys) else torch.zeros_like(query)


@dataclass(frozen=True)
class _Table:
    """The counts of all j-grams of the training text for one j (context length j - 1).

    keys, counts: the distinct j-grams (sorted keys) and how often each occurred.
    context_keys, context_totals, context_types: each distinct context (the first j - 1 tokens),
    how often it was followed by some token, and by how many distinct tokens.
    """

    keys: torch.Tensor
    counts: torch.Tensor
    context_keys: torch.Tensor
    context_totals: torch.Tensor
    context_types: torch.Tensor

    @classmethod
    def from_keys(cls, keys: torch.Tensor, vocab_size: int) -> _Table:
        """Count the j-grams given as keys (one per window of the text)."""
        # Sort the keys, then count each run of equal keys (faster than torch.unique on a CPU).
        keys, counts = torch.unique_consecutive(keys.sort().values, return_counts=True)
        # Dropping the last digit of a key leaves its context; sorted keys keep each context together.
        context_keys, context_types = torch.unique_consecutive(keys // vocab_size, return_counts=True)
        ends = context_types.cumsum(0)
        running = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        context_totals = running[ends] - running[ends - context_types]
        return cls(keys, counts, context_keys, context_totals, context_types)


class NGramModel:
    """An n-gram language model: P(next token | the last order - 1 tokens), estimated by counting.

    Build one with `NGramModel.fit(ids, order, ...)` or `NGramModel.fit_text(text, order, ...)`.
    order 1 is a unigram model (no context), 2 a bigram model, 3 a trigram model, ...
    Contexts shorter than order - 1 (the first tokens of a text) use the counts of that shorter
    context, so `log_prob` is the chain rule over the whole text.
    Probabilities are float64.
    """

    def __init__(self, order: int, vocab_size: int, tables: list[_Table], smoothing: str = "none",
                 k: float | None = None, tokenizer: CharTokenizer | None = None):
        self.order, self.vocab_size = _check_order_and_vocab(order, vocab_size)
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {', '.join(map(repr, SMOOTHINGS))}; got {smoothing!r}")
        if smoothing == "add-k":
            k = 1.0 if k is None else k
            k = check_number(k, "k", above=0, why="add-k smoothing; 1 = Laplace")
        elif k is not None:
            raise ValueError(f"k is only used with smoothing='add-k'; got k={k!r} with smoothing={smoothing!r}")
        if len(tables) != order:
            raise ValueError(f"tables must hold one count table per order 1..{order}; got {len(tables)}")
        self.tables = tables          # tables[j - 1]: counts of j-grams
        self.smoothing, self.k = smoothing, k
        self.tokenizer = tokenizer

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def fit(cls, ids, order: int, *, vocab_size: int | None = None, smoothing: str = "none",
            k: float | None = None) -> NGramModel:
        """Count every 1-, 2-, ..., order-gram of `ids` (a list or 1-D tensor of token ids).

        vocab_size: number of possible tokens (default: max(ids) + 1).
        smoothing: "none", "add-k" (with k, default 1 = Laplace) or "interpolated" (Witten-Bell).

            NGramModel.fit([0, 1, 0, 1, 1], order=2).counts([0])  -> tensor([0, 2])
        """
        _check_order_and_vocab(order, 1 if vocab_size is None else vocab_size)
        ids = _as_ids(ids, "ids", vocab_size)
        if vocab_size is None:
            vocab_size = int(ids.max()) + 1
        _check_order_and_vocab(order, vocab_size)
        if len(ids) < order:
            raise ValueError(f"ids must hold at least order = {order} tokens to count one {order}-gram; "
                             f"got {len(ids)}")
        tables, keys = [], ids.clone()  # the 1-gram keys are the ids themselves
        for j in range(1, order + 1):
            if j > 1:  # a j-gram's key: the key of its first j - 1 tokens, times V, plus its last token
                keys = keys[:-1] * vocab_size + ids[j - 1:]
            tables.append(_Table.from_keys(keys, vocab_size))
        return cls(order, vocab_size, tables, smoothing, k)

    @classmethod
    def fit_text(cls, text: str, order: int, *, tokenizer: CharTokenizer | None = None,
                 smoothing: str = "none", k: float | None = None) -> NGramModel:
        """Fit on a text, one token per character. tokenizer: default CharTokenizer(text).

        Pass a tokenizer built on more text (training + validation) when you will score text with
        characters the training text lacks. The model keeps it as `model.tokenizer`.
        """
        if not isinstance(text, str) or not text:
            raise ValueError(f"text must be a non-empty string; got {text!r:.40}")
        tokenizer = CharTokenizer(text) if tokenizer is None else tokenizer
        model = cls.fit(tokenizer.encode(text), order, vocab_size=tokenizer.vocab_size,
                        smoothing=smoothing, k=k)
        model.tokenizer = tokenizer
        return model

    def with_smoothing(self, smoothing: str, k: float | None = None) -> NGramModel:
        """The same counts with another smoothing (no recounting)."""
        return NGramModel(self.order, self.vocab_size, self.tables, smoothing, k, self.tokenizer)

    def __repr__(self) -> str:
        k = f", k={self.k:g}" if self.smoothing == "add-k" else ""
        return (f"NGramModel(order={self.order}, vocab_size={self.vocab_size}, smoothing={self.smoothing!r}{k}, "
                f"{len(self.tables[-1].keys):,} distinct {self.order}-grams)")

    # --- one context ----------------------------------------------------------------------------

    def _context(self, context_ids) -> torch.Tensor:
        context = _as_ids(context_ids, "context_ids", self.vocab_size, allow_empty=True)
        return context[max(0, len(context) - (self.order - 1)):]  # the last order - 1 ids (or all)

    def counts(self, context_ids=()) -> torch.Tensor:
        """(vocab,) int64: how often each token followed the context (its last order - 1 tokens)."""
        return self._row(self._context(context_ids).tolist())

    def _row(self, context: list[int]) -> torch.Tensor:
        """(vocab,) int64 counts of each token after `context` (at most order - 1 ids, already checked)."""
        V, table = self.vocab_size, self.tables[len(context)]
        key = 0
        for token in context:  # the context's key in base V; its followers' keys are key*V .. key*V + V-1
            key = key * V + token
        lo, hi = torch.searchsorted(table.keys, torch.tensor([key * V, key * V + V])).tolist()
        row = torch.zeros(V, dtype=torch.long)
        row[table.keys[lo:hi] - key * V] = table.counts[lo:hi]
        return row

    def next_token_probs(self, context_ids=()) -> torch.Tensor:
        """(vocab,) float64: P(next token | context), summing to 1. Uses the last order - 1 ids."""
        return self._next_probs(self._context(context_ids).tolist())

    def _next_probs(self, context: list[int]) -> torch.Tensor:
        V = self.vocab_size
        if self.smoothing == "interpolated":
            probs = torch.full((V,), 1.0 / V, dtype=torch.float64)  # level 0: uniform
            for m in range(len(context) + 1):  # contexts of length 0, 1, ..., len(context)
                counts = self._row(context[len(context) - m:]).double()
                total, types = counts.sum(), (counts > 0).sum()
                if total > 0:  # an unseen context keeps the shorter context's distribution
                    probs = (counts + types * probs) / (total + types)
            return probs
        counts = self._row(context).double()
        total = counts.sum()
        if self.smoothing == "add-k":
            return (counts + self.k) / (total + self.k * V)
        if total == 0:
            raise ValueError(f"context_ids {context} never appeared in the training text, so an unsmoothed "
                             f"model has no next-token distribution for it (0 / 0); use smoothing='add-k' or "
                             f"'interpolated', or a context seen in training")
        return counts / total

    def next_token_logits(self, context_ids=()) -> torch.Tensor:
        """(vocab,) float64: log P(next token | context). Log-probabilities are valid logits:
        softmax(logits) gives back the probabilities. Tokens of probability 0 get -inf."""
        return self.next_token_probs(context_ids).log()

    # --- a whole text ---------------------------------------------------------------------------

    def log_probs(self, ids) -> torch.Tensor:
        """(len(ids),) float64: log P(ids[i] | ids[i - order + 1 : i]) for every position i, in nats.

        The first order - 1 tokens are predicted from the shorter contexts they have (ids[0] from none).
        Vectorised: one lookup per order for the whole text.
        """
        ids = _as_ids(ids, "ids", self.vocab_size)
        T, V = len(ids), self.vocab_size
        lengths = torch.arange(T).clamp_max(self.order - 1)  # (T,) context length at each position
        # Positions 0 .. order-2 have shorter contexts (one position each); the rest use order - 1 tokens.
        if self.smoothing == "interpolated":
            probs = torch.full((T,), 1.0 / V, dtype=torch.float64)
            for m in range(min(self.order, T)):
                table, pos = self.tables[m], torch.arange(m, T)       # positions with >= m tokens before them
                keys = ngram_keys(ids, m + 1, V)                        # (T - m,) the m-token context + token
                counts = _lookup(table.keys, table.counts, keys).double()
                if m == 0:
                    total = table.counts.sum().double().expand(len(pos))
                    types = torch.tensor(float(len(table.keys)), dtype=torch.float64).expand(len(pos))
                else:
                    idx, found = _find(table.context_keys, keys // V)  # one search for both lookups
                    total = torch.where(found, table.context_totals[idx], 0).double()
                    types = torch.where(found, table.context_types[idx], 0).double()
                seen = total > 0
                mixed = (counts + types * probs[pos]) / (total + types).clamp_min(1)
                probs[pos] = torch.where(seen, mixed, probs[pos])
            return probs.log()
        out = torch.empty(T, dtype=torch.float64)
        for m in range(min(self.order, T)):
            table = self.tables[m]
            pos = torch.nonzero(lengths == m).squeeze(1)               # positions using context length m
            keys = ngram_keys(ids[pos[0] - m:pos[-1] + 1], m + 1, V)  # (len(pos),) context + token
            counts = _lookup(table.keys, table.counts, keys).double()
            if m == 0:
                total = table.counts.sum().double().expand(len(pos))
            else:
                total = _lookup(table.context_keys, table.context_totals, keys // V).double()
            if self.smoothing == "add-k":
                out[pos] = ((counts + self.k) / (total + self.k * V)).log()
                continue
            if (total == 0).any():
                i = int(pos[total == 0][0])
                raise ValueError(f"ids has a context never seen in training, at position {i} (context "
                                 f"{ids[i - m:i].tolist()}): an unsmoothed model has no distribution there; "
                                 f"use smoothing='add-k' or 'interpolated'")
            out[pos] = (counts / total).log()  # log 0 = -inf: the model called this token impossible
        return out

    def seen(self, ids) -> torch.Tensor:
        """(len(ids),) bool: True where the n-gram ending at position i (with the context that
        `log_probs` uses) occurred in the training text. An unsmoothed model's loss is finite only
        where this is True."""
        ids = _as_ids(ids, "ids", self.vocab_size)
        out = torch.empty(len(ids), dtype=torch.bool)
        for m in range(min(self.order, len(ids))):
            start, stop = m, (m + 1 if m < self.order - 1 else len(ids))  # positions with context length m
            keys = ngram_keys(ids[start - m:stop], m + 1, self.vocab_size)
            out[start:stop] = _lookup(self.tables[m].keys, self.tables[m].counts, keys) > 0
        return out

    def log_prob(self, ids) -> float:
        """log P(ids) in nats, by the chain rule: the sum of log P(token | its context)."""
        return float(self.log_probs(ids).sum())

    def cross_entropy(self, ids) -> float:
        """The average loss on `ids`: -(1/T) sum_i log P(ids[i] | context), in nats per token."""
        return float(-self.log_probs(ids).mean())

    def perplexity(self, ids) -> float:
        """exp(cross-entropy): the number of equally likely choices the model is as unsure as."""
        return math.exp(self.cross_entropy(ids))

    # --- generating -----------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None, context=()) -> torch.Tensor:
        """(n,) int64: n new tokens, each drawn from P(next | the tokens before it), after `context`.

        generator: a seeded torch.Generator makes the sample reproducible (the same seed, the same
        text); None uses torch's global random state.
        """
        check_int(n, "n", 0, why="how many tokens to draw")
        history = _as_ids(context, "context", self.vocab_size, allow_empty=True).tolist()
        start = len(history)
        for _ in range(n):
            probs = self._next_probs(history[max(0, len(history) - (self.order - 1)):])
            history.append(int(torch.multinomial(probs, 1, generator=generator)))
        return torch.tensor(history[start:], dtype=torch.long)

    def sample_text(self, n: int, generator: torch.Generator | None = None, prompt: str = "") -> str:
        """Like `sample`, for a model fitted with `fit_text`: the prompt and n new characters as text."""
        if self.tokenizer is None:
            raise ValueError("sample_text needs a tokenizer: fit the model with NGramModel.fit_text")
        new = self.sample(n, generator, self.tokenizer.encode(prompt))
        return prompt + self.tokenizer.decode(new)


def _check_order_and_vocab(order: int, vocab_size: int) -> tuple[int, int]:
    check_int(order, "order", why="1 = unigram, 2 = bigram, 3 = trigram, ...")
    check_int(vocab_size, "vocab_size")
    if vocab_size ** order > 2**62:
        raise ValueError(f"order {order} with vocab_size {vocab_size} is too large: n-gram keys need "
                         f"vocab_size ** order <= 2**62; use a lower order")
    return order, vocab_size



# --- the bigram as a neural model: a table of logits, learned by gradient descent ------------------

def bigram_count_matrix(ids, vocab_size: int) -> torch.Tensor:
    """(vocab, vocab) float64: entry [a, b] counts how often token a was followed by token b.

        bigram_count_matrix([0, 1, 0, 1, 1], 2)  ->  [[0, 2], [1, 1]]
    """
    ids = _as_ids(ids, "ids", vocab_size)
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 tokens to count one pair; got {len(ids)}")
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.float64), accumulate=True)
    return counts


def bigram_loss_and_gradient(logits: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean cross-entropy of a bigram logit table on the counted pairs, and its gradient, by hand.

    logits: (V, V), row a holds the scores of every next token after a, P(b | a) = softmax(logits[a])_b.
    counts: (V, V) pair counts C (from `bigram_count_matrix`), N = C.sum() pairs in all.

        loss = -(1/N) sum_(a,b) C[a, b] log P(b | a)
        d loss / d logits[a, b] = (n_a P(b | a) - C[a, b]) / N,     n_a = sum_b C[a, b]

    "Predicted minus observed": the gradient is zero exactly when P(b | a) = C[a, b] / n_a, the
    counting model's estimate, which is why gradient descent on this table ends where counting starts.
    """
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1] or logits.shape != counts.shape:
        raise ValueError(f"logits and counts must both be (V, V); got {tuple(logits.shape)} and {tuple(counts.shape)}")
    probs = logits.softmax(dim=-1)                                   # (V, V) row a: P(. | a)
    n_pairs = counts.sum()
    log_probs = logits.log_softmax(dim=-1)
    loss = -(counts * log_probs).sum() / n_pairs                     # pairs never seen weigh 0
    gradient = (counts.sum(dim=1, keepdim=True) * probs - counts) / n_pairs   # (V, V)
    return loss, gradient


def train_bigram_logits(counts: torch.Tensor, steps: int, learning_rate: float,
                        logits: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """Plain gradient descent on a bigram logit table: logits <- logits - learning_rate * gradient.

    Starts from all-zero logits (every next token equally likely) unless `logits` is given.
    Returns the learned (V, V) logits and the loss before each step.
    """
    check_int(steps, "steps", 0)
    check_number(learning_rate, "learning_rate", above=0)
    logits = torch.zeros_like(counts) if logits is None else logits.clone()
    losses = []
    for _ in range(steps):
        loss, gradient = bigram_loss_and_gradient(logits, counts)
        losses.append(loss.item())
        logits -= learning_rate * gradient                            # one step downhill
    return logits, losses
