"""Inference-time hyperparameters: how a model's scores become the next token.

The model gives one score (*logit*) per token of the vocabulary. Sampling turns them into one
token, in a fixed order (the same order as Hugging Face's `generate` and the OpenAI API):

    logits z (vocab,)                                    the model's raw scores
      1. penalties   z_j - count_j * frequency - [count_j > 0] * presence     (OpenAI's definition)
      2. temperature z / theta   (theta = 0: all mass on the argmax, "greedy")
      3. top-k       keep the k highest scores
      4. top-p       keep the smallest set of most likely tokens whose mass reaches p
      5. min-p       keep tokens at least min_p times as likely as the most likely one
      6. softmax, then draw one token with a seeded torch.Generator

None of this touches the model's weights: it is post-processing of one vector of scores.
Every function works on a single distribution (vocab,) or a batch (batch, vocab).

Feeding each drawn token back in, many times over, is `llmcourse.generation`.

    >>> probs = next_token_distribution(torch.tensor([2.0, 1.0, 0.0]), temperature=0.5)
    >>> [round(p, 3) for p in probs.tolist()]    # softmax([2, 1, 0] / 0.5) = softmax([4, 2, 0])
    [0.867, 0.117, 0.016]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmcourse.validate import check_int, check_number

# --- checking the knobs --------------------------------------------------------------------------


def check_temperature(temperature) -> float:
    """temperature as a float; a ValueError unless it is a finite number >= 0."""
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    return check_number(temperature, "temperature", minimum=0,
                        why="0 = greedy, 1 = the model's own distribution")


def check_top_k(top_k) -> int | None:
    """top_k as an int (or None = off); a ValueError unless it is an int >= 1."""
    if top_k is None:
        return None
    return check_int(top_k, "top_k", why="or None to keep every token")


def check_top_p(top_p) -> float:
    """top_p as a float in (0, 1]; 1 keeps every token."""
    return check_number(top_p, "top_p", above=0, maximum=1, why="1 = keep every token")


def check_min_p(min_p) -> float:
    """min_p as a float in [0, 1]; 0 keeps every token."""
    return check_number(min_p, "min_p", minimum=0, maximum=1, why="0 = keep every token")


def check_penalty(value, name: str) -> float:
    """A presence or frequency penalty: any finite number (the OpenAI API allows -2.0 to 2.0)."""
    return check_number(value, name, why="OpenAI allows -2.0 to 2.0; 0 = off")


def check_logits(logits) -> torch.Tensor:
    """logits (vocab,) or (batch, vocab), floating point, no NaN, at least one finite score per row."""
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (1, 2) or logits.shape[-1] < 1:
        raise ValueError(f"logits must be a tensor (vocab,) or (batch, vocab); got "
                         f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point; got {logits.dtype} (use .float())")
    if not bool(torch.isfinite(logits.amax(-1)).all()):  # one pass: the row maxima carry NaN and +-inf
        if torch.isnan(logits).any():
            raise ValueError("logits contain NaN; the model's output is broken (check its inputs and weights)")
        if (logits == math.inf).any():
            raise ValueError("logits contain +inf; scores must be finite numbers or -inf (impossible token)")
        raise ValueError("every logit of a row is -inf: no token is possible, so there is no distribution")
    return logits


# --- 1. penalties ---------------------------------------------------------------------------------


def token_counts(ids, vocab_size: int) -> torch.Tensor:
    """How often each token occurs in `ids`: (vocab,) for one sequence, (batch, vocab) for (batch, t).

        token_counts([2, 0, 2], vocab_size=4) -> tensor([1, 0, 2, 0])
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        return torch.bincount(ids, minlength=vocab_size)[:vocab_size] if len(ids) else torch.zeros(vocab_size, dtype=torch.long)
    if ids.dim() != 2:
        raise ValueError(f"ids must be (time,) or (batch, time); got {tuple(ids.shape)}")
    counts = torch.zeros(ids.shape[0], vocab_size, dtype=torch.long)
    return counts.scatter_add_(1, ids, torch.ones_like(ids))


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor, presence_penalty: float = 0.0,
                    frequency_penalty: float = 0.0) -> torch.Tensor:
    """The OpenAI API's presence and frequency penalties.

        z_j - count_j * frequency_penalty - [count_j > 0] * presence_penalty

    counts (same shape as logits): how often each token already appeared. The frequency penalty
    grows with every repeat; the presence penalty is paid once by any token that appeared at all.
    Tokens never seen are untouched. A negative penalty encourages repetition.

        z = [1, 1, 1], counts = [0, 1, 3], presence 0.5, frequency 0.2 -> [1, 0.3, -0.1]
    """
    logits = check_logits(logits)
    presence_penalty = check_penalty(presence_penalty, "presence_penalty")
    frequency_penalty = check_penalty(frequency_penalty, "frequency_penalty")
    if not isinstance(counts, torch.Tensor) or counts.shape != logits.shape:
        raise ValueError(f"counts must be a tensor with the logits' shape {tuple(logits.shape)} (one count per "
                         f"token); got {type(counts).__name__} {tuple(getattr(counts, 'shape', ()))}")
    if (counts < 0).any():
        raise ValueError("counts must be >= 0 (how often each token appeared)")
    counts = counts.to(logits.dtype)
    return logits - counts * frequency_penalty - (counts > 0).to(logits.dtype) * presence_penalty


def apply_repetition_penalty(logits: torch.Tensor, counts: torch.Tensor, penalty: float = 1.0) -> torch.Tensor:
    """Hugging Face's `repetition_penalty` (Keskar et al., 2019, CTRL): multiplicative, not subtractive.

    Every token that already appeared (count > 0) gets its logit divided by `penalty` if the logit
    is positive and multiplied by it if negative: either way the token becomes less likely (for
    penalty > 1). How often it appeared does not matter, and the effect depends on the logit's size
    and sign, unlike the OpenAI penalties of `apply_penalties`. penalty = 1 changes nothing.

        z = [2, -2, 2], counts = [1, 1, 0], penalty 2 -> [1, -4, 2]
    """
    logits = check_logits(logits)
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
        raise ValueError(f"penalty must be a positive number (1 = no penalty); got {penalty!r}")
    if not isinstance(counts, torch.Tensor) or counts.shape != logits.shape:
        raise ValueError(f"counts must be a tensor with the logits' shape {tuple(logits.shape)}; "
                         f"got {type(counts).__name__} {tuple(getattr(counts, 'shape', ()))}")
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(counts > 0, penalised, logits)


# --- 2. temperature -------------------------------------------------------------------------------


def greedy_distribution(logits: torch.Tensor) -> torch.Tensor:
    """The theta -> 0 limit: probability 1 on the highest score (the first one, if tied)."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


def temperature_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The deck's modified softmax: sigma(z)_i = exp(z_i / theta) / sum_j exp(z_j / theta).

    theta = 1: the model's own distribution. theta < 1: sharper ("confident"). theta > 1: flatter.
    theta = 0 is the limit, all mass on the argmax (greedy), with no division by zero.
    We subtract the largest score first, softmax((z - max z) / theta), which is the same
    distribution and cannot overflow even for theta = 1e-30.

        temperature_softmax(tensor([2., 1., 0.]), 1.0)  -> [0.665, 0.245, 0.090]
        temperature_softmax(tensor([2., 1., 0.]), 0.5)  -> [0.867, 0.117, 0.016]
        temperature_softmax(tensor([2., 1., 0.]), 0.0)  -> [1., 0., 0.]
    """
    theta = check_temperature(temperature)
    logits = check_logits(logits)
    if theta == 0.0:
        return greedy_distribution(logits)
    shifted = logits - logits.amax(-1, keepdim=True)  # max is 0, the rest <= 0 (or -inf)
    return torch.softmax(shifted / theta, dim=-1)


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature on the logits, for the later filters: (z - max z) / theta; theta = 0 keeps only
    the argmax (every other score -inf)."""
    theta = check_temperature(temperature)
    logits = check_logits(logits)
    if theta == 0.0:
        keep = greedy_distribution(logits).bool()
        return torch.where(keep, torch.zeros_like(logits), torch.full_like(logits, -math.inf))
    return (logits - logits.amax(-1, keepdim=True)) / theta


# --- 3-5. filters: each sets the scores of dropped tokens to -inf -----------------------------------


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k highest scores, set the rest to -inf.

    Ties with the k-th score are all kept (so a tie can keep more than k), as in Hugging Face's
    TopKLogitsWarper; k >= vocab keeps everything; None is off.

        top_k_filter(tensor([1., 3., 2., 0.]), 2) -> [-inf, 3., 2., -inf]
    """
    k = check_top_k(k)
    logits = check_logits(logits)
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]          # (..., 1) the k-th highest score
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches p.

    Sort the probabilities from high to low and keep a token if the mass *before* it is still
    below p: that includes the token whose probability carries the total across p, so at least
    one token always survives. Tokens tied with the last one kept are kept too. p = 1 keeps all.

        probs [0.5, 0.3, 0.15, 0.05], p = 0.7 -> keep 0.5 and 0.3 (0.5 < 0.7, then 0.8 >= 0.7)
        probs [0.5, 0.3, 0.15, 0.05], p = 0.5 -> keep 0.5 only (it alone reaches 0.5)
    """
    p = check_top_p(p)
    logits = check_logits(logits)
    if p == 1.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    sorted_probs = probs.sort(dim=-1, descending=True).values                 # (..., vocab) high to low
    mass_before = sorted_probs.cumsum(-1) - sorted_probs                      # mass of the better tokens
    n_keep = (mass_before < p).sum(-1, keepdim=True)                          # >= 1: the first has 0 < p
    last_kept = sorted_probs.gather(-1, n_keep - 1)                           # (..., 1) smallest kept prob
    return logits.masked_fill(probs < last_kept, -math.inf)                   # ties with it stay


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least min_p times the top token's (Nguyen et al., 2024).

    Unlike top-p, the cut scales with the model's confidence: a sure model keeps few tokens,
    an unsure one many. min_p = 0 keeps all.
    """
    min_p = check_min_p(min_p)
    logits = check_logits(logits)
    if min_p == 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), -math.inf)


# --- all of it -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    """The inference-time hyperparameters, checked when made. The defaults change nothing."""

    temperature: float = 1.0          # 0 = greedy; < 1 sharper; > 1 flatter
    top_k: int | None = None          # keep the k most likely tokens (None = all)
    top_p: float = 1.0                # keep the nucleus holding probability p (1 = all)
    min_p: float = 0.0                # keep tokens >= min_p x the top probability (0 = all)
    presence_penalty: float = 0.0     # subtracted once from any token already generated
    frequency_penalty: float = 0.0    # subtracted for every time a token was generated

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        check_top_k(self.top_k)
        object.__setattr__(self, "top_p", check_top_p(self.top_p))
        object.__setattr__(self, "min_p", check_min_p(self.min_p))
        object.__setattr__(self, "presence_penalty", check_penalty(self.presence_penalty, "presence_penalty"))
        object.__setattr__(self, "frequency_penalty", check_penalty(self.frequency_penalty, "frequency_penalty"))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def process_logits(logits: torch.Tensor, config: SamplingConfig, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 1-5 on the scores: penalties -> temperature -> top-k -> top-p -> min-p. -inf = dropped."""
    z = check_logits(logits)
    if counts is not None and (config.presence_penalty or config.frequency_penalty):
        z = apply_penalties(z, counts, config.presence_penalty, config.frequency_penalty)
    elif counts is not None and counts.shape != z.shape:
        raise ValueError(f"counts must have the logits' shape {tuple(z.shape)}; got {tuple(counts.shape)}")
    z = scale_logits(z, config.temperature)
    z = top_k_filter(z, config.top_k)
    z = top_p_filter(z, config.top_p)
    return min_p_filter(z, config.min_p)


def next_token_distribution(logits: torch.Tensor, counts: torch.Tensor | None = None, *,
                            config: SamplingConfig | None = None, **settings) -> torch.Tensor:
    """The distribution the next token is drawn from, after every step (vocab,) or (batch, vocab).

    Pass a SamplingConfig or its fields as keywords:
        next_token_distribution(z, temperature=0.7, top_p=0.9)
    """
    if config is None:
        config = SamplingConfig(**settings)
    elif settings:
        raise ValueError(f"pass either config or keyword settings, not both; got {sorted(settings)}")
    return torch.softmax(process_logits(logits, config, counts), dim=-1)


def sample_from(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row: () for (vocab,) input, (batch,) for (batch, vocab)."""
    if probs.dim() == 1:
        return torch.multinomial(probs, 1, generator=generator)[0]
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
