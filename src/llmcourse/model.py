"""A GPT: the transformer of the deck's mental model, small enough to read in one sitting.

    text -> tokens -> embeddings -> [block x n_layers] -> next-token scores -> repeat

    idx (batch, time) token ids
      -> token embedding + position embedding          (batch, time, d_model)
      -> n_layers blocks, each:
             x = x + attention(layernorm(x))           tokens look at earlier tokens
             x = x + mlp(layernorm(x))                 each token thinks on its own
      -> final layernorm, then a linear "unembedding"   (batch, time, vocab_size) logits

The blocks are *pre-norm* (LayerNorm before each sub-layer, as in GPT-2): the residual stream
x is only ever added to, which keeps deep stacks trainable. Besides the model, this module counts
what a config costs without building it: `count_parameters`, `training_flops_per_token` and
`memory_bytes`.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.multihead import MultiHeadAttention
from llmcourse.validate import check_int, check_number

KVCache = list  # one (keys, values) pair per layer, each (batch, heads, t_past, d_head)


@dataclass(frozen=True)
class GPTConfig:
    """The architectural hyperparameters of a GPT (defaults: nanoGPT's CPU configuration).

        >>> config = GPTConfig(vocab_size=103, n_layers=4, d_model=128, n_heads=4, context_length=64)
        >>> config.d_model // config.n_heads       # each head works in a 32-dimensional slice
        32
    """

    vocab_size: int = 103       # how many distinct tokens (rows of the embedding table)
    context_length: int = 64    # the longest input, in tokens: one learned position vector each
    n_layers: int = 4           # how many transformer blocks are stacked ("depth")
    d_model: int = 128          # width of every token's vector (the residual stream)
    n_heads: int = 4            # attention heads per block; each works on d_model / n_heads dims
    dropout: float = 0.0        # probability of zeroing an activation while training (0 = off)
    tie_weights: bool = True    # reuse the token embedding as the output layer (saves V * d params)
    bias: bool = True           # biases in the linear layers and LayerNorms (GPT-2 has them)
    gelu_approximate: str = "none"  # the MLP's GELU: "none" = exact (erf); "tanh" = GPT-2's approximation

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "n_layers", "d_model", "n_heads"):
            value = getattr(self, name)
            check_int(value, f"GPTConfig.{name}")
        if self.d_model % self.n_heads:
            raise ValueError(f"GPTConfig.d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads}), so that every head gets d_model / n_heads dimensions")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1); got {self.dropout!r}")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"GPTConfig.gelu_approximate must be 'none' (exact GELU) or 'tanh' (GPT-2's "
                             f"approximation); got {self.gelu_approximate!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; expected some of "
                             f"{[f.name for f in fields(cls)]}")
        return cls(**d)


class MLP(nn.Module):
    """Per-token feed-forward network: widen 4x, GELU, narrow back. (batch, time, d) -> same."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.gelu_approximate = config.gelu_approximate  # GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

    def forward(self, x):
        hidden = F.gelu(self.fc(x), approximate=self.gelu_approximate)  # (B, T, 4d)
        return self.dropout(self.proj(hidden))


class Block(nn.Module):
    """One pre-norm transformer block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, bias=config.bias)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, kv_cache=None):
        attended, new_cache = self.attn(self.ln1(x), causal=True, kv_cache=kv_cache)  # (B, T, d)
        x = x + self.dropout(attended)
        x = x + self.mlp(self.ln2(x))
        return x, new_cache


class GPT(nn.Module):
    """A decoder-only transformer language model. forward(idx) -> (logits, loss)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)       # token id -> vector
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)   # position -> vector
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # vector -> scores
        if config.tie_weights:  # one (V, d) matrix both reads tokens in and scores them out
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: shrink what each block adds to the stream,
            if name.endswith("proj.weight"):      # so its variance stays ~1 however deep the stack
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, *, kv_cache: KVCache | None = None, return_cache: bool = False):
        """idx: (batch, time) int64 token ids.  targets: (batch, time) next tokens, or None.

        Returns (logits (batch, time, vocab_size), loss or None). With kv_cache (a list of one
        (k, v) per layer, from an earlier call) idx holds only the new positions; with
        return_cache=True a third element, the new per-layer cache, is returned too.
        """
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(f"idx must be (batch, time) int64 token ids; got {idx.dtype} {tuple(idx.shape)}")
        B, T = idx.shape
        t_past = 0 if kv_cache is None else kv_cache[0][0].shape[2]
        if t_past + T > self.config.context_length:
            raise ValueError(f"the input has {t_past + T} positions ({t_past} cached + {T} new) but the model's "
                             f"context_length is {self.config.context_length}; crop idx to its last "
                             f"{self.config.context_length} tokens")
        if kv_cache is not None and len(kv_cache) != self.config.n_layers:
            raise ValueError(f"kv_cache must hold one (k, v) per layer ({self.config.n_layers}); got {len(kv_cache)}")
        pos = torch.arange(t_past, t_past + T, device=idx.device)           # (T,)
        x = self.dropout(self.tok_emb(idx) + self.pos_emb(pos))             # (B, T, d)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, None if kv_cache is None else kv_cache[i])  # (B, T, d)
            new_cache.append(layer_cache)
        logits = self.lm_head(self.ln_f(x))                                 # (B, T, V)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}; got {tuple(targets.shape)}")
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))  # mean nats/token
        return (logits, loss, new_cache) if return_cache else (logits, loss)

    @torch.no_grad()
    def extend(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None):
        """idx (batch, time) extended by max_new_tokens tokens, one at a time, each fed back in:
        (batch, time + max_new_tokens), the prompt followed by the new tokens.

        temperature scales the logits before the softmax (0 = always the most likely token).
        The whole (cropped) prefix is recomputed every step: simple, not fast.
        """
        check_number(temperature, "temperature", minimum=0)
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.context_length:]                  # (B, <= context_length)
            logits = self(context)[0][:, -1, :]                             # (B, V): the next token's scores
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)               # (B, 1)
            else:
                probs = F.softmax(logits / temperature, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
        return idx


def unwrap(model) -> GPT:
    """The GPT inside a DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)
    wrapper; a GPT comes back as it is. Anything else is a ValueError."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, GPT):
        raise ValueError(f"expected an llmcourse.model.GPT (possibly wrapped); got {type(model).__name__}")
    return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode (no dropout) inside the block; afterwards the mode the model was in before.

        with eval_mode(model):
            loss = model(x, y)[1]
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def count_parameters(config: GPTConfig) -> int:
    """The number of trainable parameters of GPT(config), counted without building it.

        >>> count_parameters(GPTConfig(vocab_size=65, n_layers=4, d_model=128, n_heads=4, context_length=64))
        809856

    That is 8,320 (token embeddings) + 8,192 (positions) + 4 x 198,272 (blocks) + 256 (final
    LayerNorm); the output layer shares the token embeddings' weights (tie_weights).
    """
    d, V, b = config.d_model, config.vocab_size, int(config.bias)
    layernorm = d + b * d                                   # scale (+ shift)
    attention = (d * 3 * d + b * 3 * d) + (d * d + b * d)   # fused q,k,v + output projection
    mlp = (d * 4 * d + b * 4 * d) + (4 * d * d + b * d)     # widen, narrow
    block = 2 * layernorm + attention + mlp                 # 12 d^2 + 2 d (+ 9 d biases + 2 d)
    embeddings = V * d + config.context_length * d
    head = 0 if config.tie_weights else V * d               # tied: the token table is the head
    return embeddings + config.n_layers * block + layernorm + head


def count_parameter_tensors(config: GPTConfig) -> int:
    """How many separate parameter tensors GPT(config) has (AdamW keeps a step counter for each)."""
    per_block = 6 * (1 + int(config.bias))  # 2 LayerNorms, qkv, proj, fc, proj: weight (+ bias) each
    return 2 + config.n_layers * per_block + (1 + int(config.bias)) + (0 if config.tie_weights else 1)


def training_flops_per_token(config: GPTConfig) -> int:
    """Floating-point operations to train on one token (forward + backward), PaLM's estimate.

        flops/token = 6 N + 12 L T d

    N counts the parameters that multiply every token's vector: all of them except the
    embedding tables that are only looked up (positions; tokens too when the head is untied).
    Each such weight costs 2 FLOPs forward (multiply, add) and 4 backward (gradient with respect
    to the input and to the weight): 6 N (Kaplan et al. 2020; Chinchilla). Attention adds,
    per layer and token, Q K^T and weights x V: 2 x 2 T d forward, 3x that with the backward,
    so 12 L T d (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's `estimate_mfu`). Like them we
    count the full context T, although a causal mask leaves half of the scores unused.
    """
    N = count_parameters(config) - config.context_length * config.d_model
    if not config.tie_weights:
        N -= config.vocab_size * config.d_model
    return 6 * N + 12 * config.n_layers * config.context_length * config.d_model


def memory_bytes(config: GPTConfig, batch_size: int, dtype_bytes: int = 4) -> dict[str, int]:
    """Bytes needed to train GPT(config) on batches of `batch_size` full-length sequences.

    weights      N x dtype_bytes
    gradients    N x dtype_bytes                   (one gradient per weight)
    optimizer    N x 2 x 4 + 4 per tensor          (AdamW: running mean and mean square in fp32,
                                                    and a step counter per parameter tensor)
    activations  what autograd keeps for the backward pass (this implementation, dropout 0),
                 per block 16 B T d values: LayerNorm inputs and outputs (4), q k v (3), the
                 attention output (1; PyTorch's fused kernel lays it out so that concatenating
                 the heads is free), the MLP's widened pre- and post-GELU activations (4 + 4);
                 plus B H T softmax normalisers (a plain attention would keep the B H T^2
                 weights instead) and 4 B T LayerNorm statistics; after the blocks 2 B T d for
                 the final LayerNorm, B T V log-probabilities and 2 B T statistics.
                 (Korthikanti et al. 2022 count 34 s b h bytes per layer, i.e. 17 values in
                 16-bit, with dropout masks and an unfused attention.)
    """
    check_int(batch_size, "batch_size")
    if dtype_bytes not in (1, 2, 4, 8):
        raise ValueError(f"dtype_bytes must be 1, 2, 4 or 8; got {dtype_bytes!r}")
    N = count_parameters(config)
    B, T, d, H, V = batch_size, config.context_length, config.d_model, config.n_heads, config.vocab_size
    activations = config.n_layers * (16 * B * T * d + B * H * T + 4 * B * T) + 2 * B * T * d + B * T * V + 2 * B * T
    out = {"weights": N * dtype_bytes, "gradients": N * dtype_bytes,
           "optimizer": 8 * N + 4 * count_parameter_tensors(config),
           "activations": activations * dtype_bytes}
    out["total"] = sum(out.values())
    return out
