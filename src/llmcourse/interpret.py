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

from llmcourse.validate import check_int

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
    check_int(n_bins, "n_bins")
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
    Infinite where q gives probability 0 to a token that p gives some, as F.kl_div says too.
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got p {tuple(p.shape)}, q {tuple(q.shape)}")
    p, q = p.double(), q.double()
    terms = p * (p.log() - q.log())                                 # +inf where q = 0 < p; NaN where p = 0
    return terms.where(p > 0, torch.zeros_like(terms)).sum(-1)


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
        check_int(value, name)
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


# --------------------------------------------------------------------------- a model that forms one


def segment_repeat_batch(n: int, length: int, vocab_size: int, segment_lengths: tuple[int, int] = (4, 10),
                         generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length) random tokens in which a random segment appears twice, at random places.

    Each row: uniform random tokens; a segment of L tokens (L drawn from `segment_lengths`,
    inclusive) starting at a random a is copied to a random b >= a + L. Because L, a and b vary,
    "copy from k positions back" does not work for any fixed k: only looking up the earlier copy
    does. Returns the tokens and a bool mask (n, length - 1) that marks the *targets* a copier can
    predict: tokens b + 1 .. b + L - 1 (the first copied token, b, cannot be foreseen).

        tokens  7 3 [5 9 2] 8 1 [5 9 2] 4      predictable targets: the 9 and 2 of the copy
    """
    lo, hi = segment_lengths
    check_int(length, "length", 2 * hi, why="twice the longest segment")
    if not 2 <= lo <= hi:
        raise ValueError(f"segment_lengths must be (lo, hi) with 2 <= lo <= hi; got {segment_lengths!r}")
    tokens = torch.randint(vocab_size, (n, length), generator=generator)
    predictable = torch.zeros(n, length - 1, dtype=torch.bool)
    for row in range(n):
        L = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        a = int(torch.randint(0, length - 2 * L + 1, (1,), generator=generator))
        b = int(torch.randint(a + L, length - L + 1, (1,), generator=generator))
        tokens[row, b:b + L] = tokens[row, a:a + L]
        predictable[row, b:b + L - 1] = True          # target index j predicts token j + 1
    return tokens, predictable


class AttentionOnlyTransformer(torch.nn.Module):
    """The smallest model with an induction circuit (Elhage et al. 2021; Olsson et al. 2022).

    token + position embedding -> n_layers x [x = x + attention(x)] -> unembedding. No MLPs and no
    LayerNorm: every path from input to output goes through attention heads, so what a head does
    can be read off its weights and switched off cleanly. `head_mask` (n_layers, n_heads) of 0/1
    multiplies each head's output before the heads are mixed: 0 ablates that head.
    """

    def __init__(self, vocab_size: int, context_length: int, n_layers: int = 2, d_model: int = 64, n_heads: int = 2):
        super().__init__()
        from llmcourse.multihead import MultiHeadAttention
        self.config = {"vocab_size": vocab_size, "context_length": context_length, "n_layers": n_layers,
                       "d_model": d_model, "n_heads": n_heads}
        self.tok_emb = torch.nn.Embedding(vocab_size, d_model)
        self.pos_emb = torch.nn.Embedding(context_length, d_model)
        self.layers = torch.nn.ModuleList([MultiHeadAttention(d_model, n_heads) for _ in range(n_layers)])
        self.unembed = torch.nn.Linear(d_model, vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, head_mask: torch.Tensor | None = None):
        """idx (batch, t) -> logits (batch, t, vocab) and the attention weights, one (batch, heads, t, t) per layer."""
        from einops import rearrange

        from llmcourse.attention import attention
        cfg = self.config
        if idx.dim() != 2 or idx.dtype != torch.long or idx.shape[1] > cfg["context_length"]:
            raise ValueError(f"idx must be (batch, t <= {cfg['context_length']}) int64 token ids; "
                             f"got {idx.dtype} {tuple(idx.shape)}")
        if head_mask is not None and head_mask.shape != (cfg["n_layers"], cfg["n_heads"]):
            raise ValueError(f"head_mask must be (n_layers, n_heads) = {(cfg['n_layers'], cfg['n_heads'])}; "
                             f"got {tuple(head_mask.shape)}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))   # (B, T, d)
        maps = []
        for layer, attn in enumerate(self.layers):
            q, k, v = rearrange(attn.qkv(x), "b t (three h d) -> three b h t d", three=3, h=cfg["n_heads"])
            out, weights = attention(q, k, v, causal=True)                    # (B, H, T, d_head), (B, H, T, T)
            if head_mask is not None:
                out = out * head_mask[layer].to(out.dtype)[None, :, None, None]
            x = x + attn.proj(rearrange(out, "b h t d -> b t (h d)"))         # (B, T, d)
            maps.append(weights)
        return self.unembed(x), maps


def masked_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean next-token loss (nats) over the targets where `mask` (batch, t - 1) is True.

    logits: (batch, t, vocab) computed on tokens (batch, t); position j predicts tokens[:, j + 1].
    """
    per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # (B, t-1)
    return float(per_token[mask].mean())


def previous_token_score(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention weight from each query t >= 1 to position t - 1: (batch, heads, t, t) -> (heads,).

    1.0 = the head always looks exactly one token back, the first half of an induction circuit.
    """
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2] or weights.shape[-1] < 2:
        raise ValueError(f"weights must be (batch, heads, t, t) with t >= 2; got {tuple(weights.shape)}")
    return torch.diagonal(weights.double(), -1, dim1=-2, dim2=-1).mean((0, 2))


def train_attention_only(model: AttentionOnlyTransformer, steps: int, *, batch_size: int = 32, lr: float = 1e-2,
                         segment_lengths: tuple[int, int] = (6, 16), seed: int = 0, eval_every: int = 100,
                         eval_batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, list]:
    """Train on `segment_repeat_batch` sequences with AdamW; every `eval_every` steps record, on
    `eval_batch` (tokens, predictable mask), the loss on the copyable targets and on the others, the
    previous-token score of each layer-0 head and the induction score of each layer-1 head.
    """
    vocab, length = model.config["vocab_size"], model.config["context_length"]
    generator = torch.Generator().manual_seed(seed)
    if eval_batch is None:
        eval_batch = segment_repeat_batch(256, length, vocab, segment_lengths, torch.Generator().manual_seed(seed + 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = {"step": [], "copy_loss": [], "other_loss": [], "previous_token_l0": [], "induction_l1": []}
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                logits, maps = model(eval_batch[0])
            history["step"].append(step)
            history["copy_loss"].append(masked_loss(logits, *eval_batch))
            history["other_loss"].append(masked_loss(logits, eval_batch[0], ~eval_batch[1]))
            history["previous_token_l0"].append(previous_token_score(maps[0]).tolist())
            history["induction_l1"].append(induction_score(maps[-1], eval_batch[0]).tolist())
        if step == steps:
            break
        tokens, _ = segment_repeat_batch(batch_size, length, vocab, segment_lengths, generator)
        logits, _ = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return history


def load_induction_model() -> tuple[AttentionOnlyTransformer, dict]:
    """The shipped two-layer attention-only model trained by scripts/make_induction_head.py, in eval
    mode, and its record (config, training settings, history of losses and head scores)."""
    import json
    from importlib import resources

    import safetensors.torch

    folder = resources.files("llmcourse").joinpath("datafiles")
    info = json.loads(folder.joinpath("induction_head.json").read_text())
    model = AttentionOnlyTransformer(**info["config"])
    with resources.as_file(folder.joinpath("induction_head.safetensors")) as path:
        model.load_state_dict(safetensors.torch.load_file(str(path)))
    return model.eval(), info
