"""Generation: draw a token, append it, repeat; with a KV cache for a GPT.

`generate` extends a prompt by new tokens, each drawn from `sampling.next_token_distribution`
(penalties, temperature, top-k, top-p, min-p) and fed back in. It returns only the NEW tokens
(a `Generation`, with the entropy of every step's distribution), never the prompt.
(`GPT.extend` is the bare loop of unit 06: it returns the prompt followed by the new tokens.)

For a GPT it keeps a *KV cache*: the keys and values of every earlier position, so each step
computes one new position instead of the whole prefix. Any model works that offers
`next_token_logits(ids) -> (vocab,)` and a tokenizer (the `LanguageModel` protocol);
`GPTAdapter` and `NGramAdapter` wrap the course's two models.

At the end, two measures of generated text: how much it repeats itself, and how different
a set of samples are from each other.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from llmcourse.data import entropy
from llmcourse.sampling import SamplingConfig, next_token_distribution, sample_from, token_counts
from llmcourse.validate import check_int


# --- the model protocol and its adapters ------------------------------------------------------------


@runtime_checkable
class LanguageModel(Protocol):
    """What generation and the temperature lab need from a model.

    tokenizer: encode(text) -> list[int], decode(ids) -> str, vocab (list of token strings).
    next_token_logits(ids) -> (vocab,) float scores for the token after `ids`.
    """

    tokenizer: object

    def next_token_logits(self, ids: Sequence[int]) -> torch.Tensor: ...


class NGramAdapter:
    """An `llmcourse.ngram.NGramModel` (fitted with a tokenizer) as a LanguageModel.

    Its logits are log-probabilities: softmax gives its probabilities back; a token it never saw
    after the context has score -inf, which every step above keeps at probability 0.
    """

    def __init__(self, model, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            raise ValueError("NGramAdapter needs a tokenizer: fit the model with NGramModel.fit_text or pass one")
        self.name = f"{model.order}-gram model"
        self._memo: dict[tuple[int, ...], torch.Tensor] = {}   # context -> logits (contexts repeat a lot)

    def next_token_logits(self, ids: Sequence[int]) -> torch.Tensor:
        context = tuple(ids)[max(0, len(ids) - (self.model.order - 1)):]   # all the model looks at
        if context not in self._memo:
            if len(self._memo) > 50_000:
                self._memo.clear()
            self._memo[context] = self.model.next_token_logits(list(context)).float()   # (vocab,)
        return self._memo[context]

    def empty_prompt_ids(self) -> list[int]:
        return []  # an n-gram model predicts from an empty context: its unigram distribution


class GPTAdapter:
    """An `llmcourse.model.GPT` and its tokenizer as a LanguageModel, with KV-cache decoding.

        adapter = GPTAdapter(model, tokenizer)
        adapter.next_token_logits(tokenizer.encode("def "))   # (vocab,)
    """

    def __init__(self, model, tokenizer, device=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device if device is not None else next(model.parameters()).device
        self.context_length = model.config.context_length
        self.name = f"GPT ({model.config.n_layers} layers, width {model.config.d_model})"
        if len(tokenizer.vocab) != model.config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer.vocab)} tokens but the model's vocab_size is "
                             f"{model.config.vocab_size}; use the tokenizer the model was trained with")

    @torch.no_grad()
    def next_token_logits(self, ids: Sequence[int]) -> torch.Tensor:
        if len(ids) == 0:
            raise ValueError("a GPT needs at least one token to predict from; got an empty prompt")
        idx = torch.tensor([list(ids)[-self.context_length:]], dtype=torch.long, device=self.device)  # (1, t)
        return self.model(idx)[0][0, -1].float().cpu()                                                # (vocab,)

    def empty_prompt_ids(self) -> list[int]:
        """What to start from when the prompt is empty: a newline (or the first token)."""
        vocab = self.tokenizer.vocab
        return [vocab.index("\n") if "\n" in vocab else vocab.index(" ") if " " in vocab else 0]


# --- decoders: the state of a batch of sequences being extended ------------------------------------


class _RecomputeDecoder:
    """Any LanguageModel: call next_token_logits on the whole sequence every step."""

    def __init__(self, model, ids: list[list[int]]):
        self.model, self.ids = model, [list(row) for row in ids]

    def logits(self) -> torch.Tensor:                                  # (batch, vocab)
        return torch.stack([self.model.next_token_logits(row) for row in self.ids])

    def append(self, tokens: torch.Tensor) -> None:
        for row, token in zip(self.ids, tokens.tolist()):
            row.append(token)


class _GPTDecoder:
    """A GPT, batched; with use_cache, one new position per step (the KV cache).

    Positions are learned and absolute, so the cache is exact only while the text fits in the
    context window. Past it, each step recomputes the last context_length tokens, exactly what
    decoding without a cache does.
    """

    def __init__(self, adapter: GPTAdapter, ids: list[list[int]], use_cache: bool):
        if len({len(row) for row in ids}) != 1 or len(ids[0]) == 0:
            raise ValueError("every sequence of a batch needs the same, non-zero number of prompt tokens")
        self.model, self.T, self.use_cache = adapter.model, adapter.context_length, use_cache
        self.idx = torch.tensor(ids, dtype=torch.long, device=adapter.device)   # (batch, t)
        self.cache = None
        self._next = None

    @torch.no_grad()
    def logits(self) -> torch.Tensor:                                  # (batch, vocab)
        if self._next is None:
            self._next = self._forward_prefix()
        return self._next.float().cpu()

    def _forward_prefix(self) -> torch.Tensor:
        context = self.idx[:, -self.T:]                                 # (batch, <= T)
        if self.use_cache and self.idx.shape[1] <= self.T:
            logits, _, self.cache = self.model(context, return_cache=True)
        else:
            logits, _ = self.model(context)
            self.cache = None
        return logits[:, -1]

    @torch.no_grad()
    def append(self, tokens: torch.Tensor) -> None:
        new = tokens.to(self.idx.device).view(-1, 1)                    # (batch, 1)
        self.idx = torch.cat([self.idx, new], dim=1)
        if self.cache is not None and self.idx.shape[1] <= self.T:      # the new position fits: cached step
            logits, _, self.cache = self.model(new, kv_cache=self.cache, return_cache=True)
            self._next = logits[:, -1]
        else:
            self._next = None                                           # recompute on demand


def decoder(model, ids: list[list[int]], use_cache: bool = True):
    """A decoder for `model` over a batch of prompts (lists of ids): with a KV cache for the course
    GPT, the model's own where it brings one (a `decoder` method, as `gpt2.HuggingFaceAdapter` has),
    else one that reruns the whole sequence every step."""
    if isinstance(model, GPTAdapter):
        return _GPTDecoder(model, ids, use_cache)
    if callable(getattr(model, "decoder", None)):
        return model.decoder(ids, use_cache)
    return _RecomputeDecoder(model, ids)


# --- generation ---------------------------------------------------------------------------------------


@dataclass
class Generation:
    """What `generate` returns: the new token ids (batch, new) and, per step, the distributions' entropies."""

    tokens: torch.Tensor          # (batch, max_new_tokens) int64
    entropy: torch.Tensor         # (batch, max_new_tokens) nats, of the distribution each token came from


def generate(model, prompt_ids: Sequence[int], max_new_tokens: int, config: SamplingConfig | None = None, *,
             generator: torch.Generator | None = None, num_samples: int = 1, use_cache: bool = True,
             penalize_prompt: bool = False) -> Generation:
    """Extend prompt_ids by max_new_tokens tokens, num_samples times in parallel.

    prompt_ids: one prompt (a list of ids), or a batch of equal-length prompts (a list of lists).

    Each step: logits -> penalties -> temperature -> top-k -> top-p -> min-p -> sample -> append.
    generator: a seeded torch.Generator makes the samples reproducible. Greedy (temperature 0)
    draws no random numbers. Penalties count the generated tokens (the OpenAI API's rule);
    penalize_prompt=True counts the prompt's tokens too. use_cache: the KV cache for a GPT
    (the same tokens, faster).

        gen = generate(GPTAdapter(model, tok), tok.encode("The "), 50, SamplingConfig(temperature=0.7),
                       generator=torch.Generator().manual_seed(0))
        tok.decode(gen.tokens[0])
    """
    config = config if config is not None else SamplingConfig()
    check_int(max_new_tokens, "max_new_tokens", 0)
    check_int(num_samples, "num_samples")
    rows = _prompt_rows(prompt_ids, num_samples)
    num_samples = len(rows)
    vocab_size = len(model.tokenizer.vocab)
    if any(not 0 <= i < vocab_size for row in rows for i in row):
        raise ValueError(f"prompt_ids must be token ids in [0, {vocab_size}); got {rows[0][:10]}")
    state = decoder(model, rows, use_cache=use_cache)
    counts = token_counts(rows if penalize_prompt and rows[0] else
                          torch.zeros(num_samples, 0, dtype=torch.long), vocab_size)  # (batch, vocab)
    tokens = torch.zeros(num_samples, max_new_tokens, dtype=torch.long)
    entropies = torch.zeros(num_samples, max_new_tokens)
    for step in range(max_new_tokens):
        logits = state.logits()                                         # (batch, vocab)
        probs = next_token_distribution(logits, counts, config=config)
        next_ids = probs.argmax(-1) if config.greedy else sample_from(probs, generator)   # (batch,)
        tokens[:, step] = next_ids
        entropies[:, step] = entropy(probs)
        counts[torch.arange(num_samples), next_ids] += 1
        if step + 1 < max_new_tokens:
            state.append(next_ids)
    return Generation(tokens=tokens, entropy=entropies)


def _prompt_rows(prompt_ids, num_samples: int) -> list[list[int]]:
    """One prompt (a list of ids) -> num_samples copies; a batch (a list of equal-length lists) -> itself."""
    if isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids.tolist()
    prompt_ids = list(prompt_ids)
    if prompt_ids and isinstance(prompt_ids[0], (list, tuple)):
        if num_samples != 1:
            raise ValueError("pass either a batch of prompts or num_samples, not both")
        if len({len(row) for row in prompt_ids}) != 1:
            raise ValueError("a batch of prompts must have equal lengths; got lengths "
                             f"{sorted({len(row) for row in prompt_ids})}")
        return [[int(i) for i in row] for row in prompt_ids]
    return [[int(i) for i in prompt_ids] for _ in range(num_samples)]


def generate_text(model, prompt: str, max_new_tokens: int, config: SamplingConfig | None = None, *,
                  seed: int | None = 0, **kwargs) -> str:
    """generate() on text: the prompt's continuation as a string (one sample; seed=None: torch's global RNG)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    gen = generate(model, model.tokenizer.encode(prompt), max_new_tokens, config, generator=generator, **kwargs)
    return model.tokenizer.decode(gen.tokens[0].tolist())


def encode_known(tokenizer, text: str) -> tuple[list[int], list[str]]:
    """Encode text, dropping characters the tokenizer never saw; return (ids, the dropped characters).

    A tokenizer that can encode every text (byte-level BPE, GPT-2's) drops nothing; one that
    refuses unseen characters with a ValueError (a character tokenizer) loses only those.

        encode_known(CharTokenizer("abc"), "abz") -> ([0, 1], ['z'])
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str; got {type(text).__name__}")
    try:
        return tokenizer.encode(text), []
    except ValueError:  # some characters are unknown to this tokenizer: drop just those
        known = set(tokenizer.vocab)
        dropped = sorted({ch for ch in text if ch not in known})
        return tokenizer.encode("".join(ch for ch in text if ch in known)), dropped


def beam_search(model, prompt_ids: Sequence[int], max_new_tokens: int, beam_width: int = 4) -> tuple[list[int], float]:
    """The continuation of highest total log-probability that a beam of `beam_width` finds.

    Each step extends every kept sequence by every token, scores each candidate by the sum of its
    tokens' log-probabilities, and keeps the `beam_width` best. beam_width = 1 is greedy decoding;
    a beam as wide as all possible continuations is an exact search. Returns (new token ids, their
    total log-probability in nats). No length penalty: every candidate has the same length.
    `model` is any LanguageModel (one `next_token_logits` call per kept sequence and step).
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be a positive int; got {beam_width!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}")
    prompt = list(prompt_ids)
    beams = [([], 0.0)]                                                  # (new ids, total log-probability)
    for _ in range(max_new_tokens):
        candidates = []
        for ids, score in beams:
            log_probs = torch.log_softmax(model.next_token_logits(prompt + ids).double(), dim=-1)   # (vocab,)
            top = log_probs.topk(min(beam_width, len(log_probs)))
            candidates += [(ids + [int(t)], score + float(lp)) for lp, t in zip(top.values, top.indices)]
        beams = sorted(candidates, key=lambda c: c[1], reverse=True)[:beam_width]
    return beams[0]


# --- measuring generated text -------------------------------------------------------------------------


def repeated_ngram_fraction(ids: Sequence[int], n: int) -> float:
    """The share of the n-grams of `ids` that already occurred earlier in `ids` (0 = no repeats).

    A text stuck in a loop ("the the the ...") scores near 1.

        repeated_ngram_fraction([1, 2, 1, 2, 1, 2], 2) -> 0.6   ((1,2),(2,1) new; 3 of 5 repeats)
    """
    ids = list(ids.tolist() if isinstance(ids, torch.Tensor) else ids)
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al., 2016): distinct n-grams / all n-grams, over a set of samples. 1 = all different."""
    grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
