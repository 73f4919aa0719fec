"""Measuring what a model does, not what it seems to do: calibration, brittleness, induction heads.

Three instruments for the deck's "reasons for caution":

* **Calibration** ("confidence ≠ truth"). Put every prediction in a bin by its confidence (the
  probability of its top-1 token); in each bin compare the mean confidence with the fraction that
  was right. A calibrated model is right 80 % of the time when it says 0.8. The expected
  calibration error (ECE) is the gap, weighted by how many predictions fall in each bin:

      ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|

* **Brittleness** ("behavior can be brittle"). Change the prompt a little (a typo, a capital, a
  space) and measure how far the next-token distribution moves: the KL divergence from the
  original distribution, and whether the top-1 token flips.

* **Induction heads** (interpretation). On a random segment repeated twice, a head that attends
  from position i to the token *after* the previous occurrence of token i can copy what came
  next last time. Its induction score is the mean weight it puts there.

    >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.3]); correct = torch.tensor([True, False, True, False])
    >>> expected_calibration_error(conf, correct, n_bins=10)   # |0.5-0.9|*2/4 + |1-0.6|/4 + |0-0.3|/4
    tensor(0.3750, dtype=torch.float64)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- calibration


def _check_confidences(confidences, correct) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(confidences, torch.Tensor) or confidences.dim() != 1 or not confidences.is_floating_point():
        raise ValueError(f"confidences must be a 1-d float tensor (one probability per prediction); "
                         f"got {type(confidences).__name__} {tuple(getattr(confidences, 'shape', ()))}")
    if not isinstance(correct, torch.Tensor) or correct.shape != confidences.shape:
        raise ValueError(f"correct must be a tensor shaped like confidences {tuple(confidences.shape)}; "
                         f"got {type(correct).__name__} {tuple(getattr(correct, 'shape', ()))}")
    if confidences.numel() == 0:
        raise ValueError("confidences is empty: need at least one prediction")
    if (confidences < 0).any() or (confidences > 1).any() or not torch.isfinite(confidences).all():
        raise ValueError("confidences must be probabilities in [0, 1]")
    return confidences.double(), correct.double()


def bin_index(confidences: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Which of `n_bins` equal-width bins of [0, 1] each confidence falls in: floor(c * n_bins), 1.0 in the last.

        >>> bin_index(torch.tensor([0.0, 0.05, 0.1, 0.95, 1.0]), 10)
        tensor([0, 0, 1, 9, 9])
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int; got {n_bins!r}")
    return (confidences * n_bins).floor().long().clamp(0, n_bins - 1)


@dataclass
class ReliabilityBins:
    """Per bin: its edges, how many predictions, their mean confidence and their accuracy (NaN if empty)."""

    edges: torch.Tensor        # (n_bins + 1,) 0, 1/n, ..., 1
    counts: torch.Tensor       # (n_bins,) predictions in each bin
    confidence: torch.Tensor   # (n_bins,) mean confidence in each bin
    accuracy: torch.Tensor     # (n_bins,) fraction right in each bin


def reliability_bins(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = 10) -> ReliabilityBins:
    """The numbers behind a reliability diagram: accuracy against confidence, bin by bin.

    confidences: (N,) the probability the model gave its top-1 prediction.
    correct:     (N,) bool, whether that prediction was the true next token.
    """
    conf, right = _check_confidences(confidences, correct)
    idx = bin_index(conf, n_bins)                                        # (N,)
    counts = torch.bincount(idx, minlength=n_bins).double()             # (n_bins,)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    right_sum = torch.bincount(idx, weights=right, minlength=n_bins)
    nan = torch.full_like(counts, float("nan"))
    return ReliabilityBins(
        edges=torch.linspace(0, 1, n_bins + 1, dtype=torch.float64),
        counts=counts,
        confidence=torch.where(counts > 0, conf_sum / counts.clamp_min(1), nan),
        accuracy=torch.where(counts > 0, right_sum / counts.clamp_min(1), nan),
    )


def expected_calibration_error(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = 10) -> torch.Tensor:
    """ECE = sum over bins of (n_b / N) |accuracy_b - confidence_b|; 0 = perfectly calibrated.

    Empty bins contribute nothing. The answer depends on n_bins (10 or 15 are usual), so report it.
    """
    bins = reliability_bins(confidences, correct, n_bins)
    used = bins.counts > 0
    weight = bins.counts[used] / bins.counts.sum()
    return (weight * (bins.accuracy[used] - bins.confidence[used]).abs()).sum()


def top1_confidence(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From logits (..., vocab) and true next tokens (...): confidence, prediction, correct, all flattened.

    confidence = the softmax probability of the argmax token; correct = (argmax == target).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"targets must have the shape of logits without its last axis, {tuple(logits.shape[:-1])}; "
                         f"got {tuple(targets.shape)}")
    probs = torch.softmax(logits.double(), dim=-1)
    confidence, prediction = probs.max(dim=-1)
    return confidence.reshape(-1), prediction.reshape(-1), (prediction == targets).reshape(-1)


# --------------------------------------------------------------------------- brittleness


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i log(p_i / q_i) in nats, over the last axis; 0 log 0 = 0.

    How many extra nats per token it costs to believe q when the truth is p. Not symmetric.
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got p {tuple(p.shape)}, q {tuple(q.shape)}")
    p, q = p.double(), q.double()
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(p))
    return terms.sum(-1)


def top1_flip_rate(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Fraction of rows (distributions over the last axis) whose most likely token differs between p and q.

        >>> top1_flip_rate(torch.tensor([[.6, .4], [.2, .8]]), torch.tensor([[.4, .6], [.1, .9]]))
        tensor(0.5000)
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got p {tuple(p.shape)}, q {tuple(q.shape)}")
    return (p.argmax(-1) != q.argmax(-1)).float().mean()


@torch.no_grad()
def next_token_probs(model, ids: list[int] | torch.Tensor) -> torch.Tensor:
    """The model's distribution (vocab,) over the token after `ids` (cropped to its context length)."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("ids is empty: the model needs at least one token of prompt")
    ids = ids[:, -model.config.context_length:].to(next(model.parameters()).device)
    logits, _ = model(ids)
    return torch.softmax(logits[0, -1].double(), dim=-1).cpu()


def brittleness(model, tokenizer, prompt: str, variants: list[str]) -> list[dict]:
    """How far the next-token distribution moves when `prompt` becomes each of `variants`.

    Returns one dict per variant: the variant, its top-1 token, KL(original || variant) in nats and
    whether the top-1 token flipped.
    """
    base = next_token_probs(model, tokenizer.encode(prompt))
    rows = []
    for variant in variants:
        probs = next_token_probs(model, tokenizer.encode(variant))
        rows.append({"prompt": variant, "top1": tokenizer.decode([int(probs.argmax())]),
                     "p_top1": float(probs.max()), "kl": float(kl_divergence(base, probs)),
                     "flipped": bool(probs.argmax() != base.argmax())})
    return rows


# --------------------------------------------------------------------------- induction heads


def repeated_random_sequences(n: int, segment_length: int, vocab_size: int, generator=None) -> torch.Tensor:
    """(n, 2 * segment_length) token ids: a random segment of distinct tokens, then the same segment again.

    The first half is unpredictable (about log(vocab_size) nats at best); the second half is
    predictable by anything that can look back and copy: the job of an induction head. The tokens
    of a segment are distinct, so each token of the second half has exactly one earlier copy.
    """
    for name, value in (("n", n), ("segment_length", segment_length), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if segment_length > vocab_size:
        raise ValueError(f"segment_length ({segment_length}) must be at most vocab_size ({vocab_size}) "
                         f"for the segment's tokens to be distinct")
    order = torch.rand(n, vocab_size, generator=generator).argsort(dim=-1)          # a random permutation per row
    segment = order[:, :segment_length]                                              # (n, L) distinct tokens
    return torch.cat([segment, segment], dim=1)                                      # (n, 2L)


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """For each position i of tokens (batch, t): j + 1, where j < i is the last earlier position with
    tokens[j] == tokens[i]; -1 if token i has not occurred before.

        >>> induction_targets(torch.tensor([[5, 7, 9, 5, 7, 9]]))
        tensor([[-1, -1, -1,  1,  2,  3]])
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (batch, t); got {tuple(tokens.shape)}")
    t = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]                          # (b, t_query, t_key)
    earlier = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril(-1)
    positions = torch.arange(t, device=tokens.device)
    last = torch.where(same & earlier, positions, torch.full_like(positions, -1)).amax(-1)  # (b, t)
    return torch.where(last >= 0, last + 1, last)


def induction_score(weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean attention from each query i to the token after the previous occurrence of token i.

    weights: (batch, heads, t, t) causal attention weights; tokens: (batch, t).
    Returns (heads,): averaged over every query whose token occurred before. A perfect induction
    head scores 1; a head blending uniformly over the t+1 visible positions scores about 2/t.
    """
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be (batch, heads, t, t); got {tuple(weights.shape)}")
    b, _, t, _ = weights.shape
    if tokens.shape != (b, t):
        raise ValueError(f"tokens must be (batch, t) = {(b, t)} to match the weights; got {tuple(tokens.shape)}")
    target = induction_targets(tokens)                                       # (b, t)
    has = target >= 0
    if not has.any():
        raise ValueError("no token repeats in tokens, so there is nothing for an induction head to do")
    picked = weights.double().gather(-1, target.clamp_min(0)[:, None, :, None].expand(-1, weights.shape[1], -1, 1))
    picked = picked.squeeze(-1)                                              # (b, heads, t)
    mask = has[:, None, :].double()
    return (picked * mask).sum((0, 2)) / mask.sum((0, 2))


@torch.no_grad()
def attention_maps(model, idx: torch.Tensor) -> list[torch.Tensor]:
    """The attention weights of every layer of an llmcourse GPT on idx (batch, t).

    Runs the blocks exactly as GPT.forward does, but asks each attention layer for its weights.
    Returns a list (one per layer) of (batch, heads, t, t) tensors.
    """
    if idx.dim() != 2 or idx.dtype != torch.long:
        raise ValueError(f"idx must be (batch, time) int64 token ids; got {idx.dtype} {tuple(idx.shape)}")
    pos = torch.arange(idx.shape[1], device=idx.device)
    x = model.tok_emb(idx) + model.pos_emb(pos)                              # (B, T, d)
    maps = []
    for block in model.blocks:
        attended, _, weights = block.attn(block.ln1(x), causal=True, return_weights=True)
        x = x + attended
        x = x + block.mlp(block.ln2(x))
        maps.append(weights)
    return maps


def split_half_losses(model, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss (nats) on the first and on the second half of repeated sequences (batch, 2L).

    Predictions of tokens 1..L-1 count as the first half, of tokens L..2L-1 as the second.
    """
    if tokens.dim() != 2 or tokens.shape[1] % 2:
        raise ValueError(f"tokens must be (batch, 2L) repeated sequences; got {tuple(tokens.shape)}")
    half = tokens.shape[1] // 2
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1])                                    # (B, 2L-1, V)
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")  # (B, 2L-1)
    return float(loss[:, :half - 1].mean()), float(loss[:, half - 1:].mean())
