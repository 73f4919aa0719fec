"""A sparse mixture of experts: many small MLPs, and a router that sends each token to k of them.

    scores  = router(x)                      one number per expert, for every token
    probs   = softmax(scores)                a distribution over the experts
    top-k   = the k most probable experts    the only ones that will run for this token
    gates   = probs of the top-k, renormalised to sum to 1 (0 for every other expert)
    output  = sum over the chosen experts e of gates[e] * expert_e(x)

A dense MLP runs all its weights on every token. An MoE layer with E experts stores E MLPs but
runs only k of them per token: its *total* parameters grow with E, its *active* parameters (and
its compute per token) only with k. The Switch Transformer's auxiliary loss keeps the router from
sending every token to the same few experts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcourse.model import eval_mode
from llmcourse.train import TrainConfig, TrainingHistory, make_optimizer, optimizer_step
from llmcourse.validate import check_int, check_number



def top_k_gating(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax over the experts, keep the k largest, renormalise them to sum to 1.

    logits: (tokens, experts), the router's scores.
    Returns gates (tokens, experts), zero outside each token's top k and summing to 1 per token;
    indices (tokens, k), the chosen experts, most probable first; probs (tokens, experts), the
    full softmax (the load-balancing loss needs it).

        logits [[2, 1, 0, -1]], k=2  ->  probs [[.64 .24 .09 .03]]
                                     ->  gates [[.73 .27 0 0]], indices [[0 1]]

    Softmax-then-renormalise equals a softmax over the k chosen logits alone (the common factor
    cancels), so "top-k on the logits, then softmax over those k" is the same gate.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (tokens, experts); got shape {tuple(logits.shape)}")
    n_experts = logits.shape[-1]
    if not 1 <= k <= n_experts:
        raise ValueError(f"k must be between 1 and the number of experts ({n_experts}); got {k}")
    probs = logits.softmax(dim=-1)                                  # (N, E)
    top_probs, indices = probs.topk(k, dim=-1)                      # (N, k), (N, k)
    top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)     # renormalise: sums to 1
    gates = torch.zeros_like(probs).scatter(-1, indices, top_probs)  # (N, E), zero elsewhere
    return gates, indices, probs


def tokens_per_expert(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """How many token slots each expert receives: (tokens, k) or (tokens,) indices -> (experts,) int64.

        indices [[0, 2], [0, 1], [2, 0]], n_experts 4  ->  [3, 1, 2, 0]
    """
    if indices.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"indices must be an integer tensor; got dtype {indices.dtype}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= n_experts):
        raise ValueError(f"indices must lie in [0, n_experts={n_experts}); got {indices.min()}..{indices.max()}")
    return torch.bincount(indices.reshape(-1), minlength=n_experts)


def load_balancing_loss(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The Switch Transformer's auxiliary loss,  N_E * sum_i f_i * P_i  (Fedus et al. 2021, eq. 4).

    probs: (tokens, experts), the router's softmax; indices: (tokens,) or (tokens, k), the experts
    each token was sent to.  f_i: the fraction of token slots sent to expert i (no gradient: a
    count); P_i: the mean router probability of expert i (differentiable). It is 1 when both are
    uniform (1/N_E each) and grows to N_E when every token goes to one expert with certainty, so
    minimising it spreads the tokens out.

        probs uniform over 4 experts, tokens spread evenly  ->  4 * 4 * (1/4 * 1/4) = 1.0
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must be (tokens, experts); got shape {tuple(probs.shape)}")
    n_tokens, n_experts = probs.shape
    if indices.shape[0] != n_tokens:
        raise ValueError(f"indices must have one row per token ({n_tokens}); got shape {tuple(indices.shape)}")
    counts = tokens_per_expert(indices, n_experts).to(probs.dtype)
    f = counts / counts.sum()                     # (E,) share of slots, sums to 1
    P = probs.mean(dim=0)                         # (E,) mean probability, sums to 1
    return n_experts * (f * P).sum()


class Expert(nn.Module):
    """One expert: the transformer's MLP, d -> hidden -> d with a GELU. (tokens, d) -> (tokens, d)."""

    def __init__(self, d_model: int, d_hidden: int, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(d_model, d_hidden, bias=bias)
        self.proj = nn.Linear(d_hidden, d_model, bias=bias)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class MoE(nn.Module):
    """A sparse mixture-of-experts layer: (..., d_model) -> (..., d_model), each token through k experts.

    After each forward pass it keeps what the router decided, for the loss and for plots:
    `aux_loss` (the load-balancing loss), `last_indices` (tokens, k) and `last_probs` (tokens, E).

        moe = MoE(d_model=8, d_hidden=32, n_experts=4, top_k=1)
        y = moe(torch.randn(2, 5, 8))       # (2, 5, 8); moe.last_indices is (10, 1)
    """

    def __init__(self, d_model: int, d_hidden: int, n_experts: int, top_k: int = 1, bias: bool = True):
        super().__init__()
        check_int(n_experts, "n_experts")
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be between 1 and n_experts={n_experts}; got {top_k}")
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)     # token -> one score per expert
        self.experts = nn.ModuleList([Expert(d_model, d_hidden, bias) for _ in range(n_experts)])
        self.aux_loss = torch.tensor(0.0)
        self.last_indices = self.last_probs = None

    def route(self, x: torch.Tensor):
        """x (tokens, d) -> gates (tokens, E), indices (tokens, k), probs (tokens, E)."""
        return top_k_gating(self.router(x), self.top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must end in d_model={self.d_model}; got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.d_model)                          # (N, d): every token on its own
        gates, indices, probs = self.route(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):                   # gather each expert's tokens
            rows = (indices == e).any(dim=-1).nonzero().squeeze(-1)  # (n_e,) tokens sent to e
            if rows.numel():
                out.index_add_(0, rows, gates[rows, e, None] * expert(flat[rows]))
        self.aux_loss = load_balancing_loss(probs, indices)
        self.last_indices, self.last_probs = indices.detach(), probs.detach()
        return out.reshape(x.shape)


def dense_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The same output as moe(x), computed the slow way: run EVERY expert on every token and
    weight by the gates (which are zero outside each token's top k). (..., d) -> (..., d)."""
    flat = x.reshape(-1, moe.d_model)
    gates, _, _ = moe.route(flat)                                        # (N, E)
    all_out = torch.stack([expert(flat) for expert in moe.experts], 1)  # (N, E, d)
    return (gates[..., None] * all_out).sum(1).reshape(x.shape)


def moe_parameter_counts(d_model: int, d_hidden: int, n_experts: int, top_k: int,
                         bias: bool = True) -> tuple[int, int]:
    """(total, active) parameters of one MoE layer: the router (d x E, no bias) plus the experts.

    Total counts all E experts; active counts the k that work on one token (the router runs for
    every token, so it is active too).

        d 8, hidden 32, 4 experts, top-1  ->  expert 2*8*32 + 32 + 8 = 552
                                          ->  (32 + 4*552, 32 + 552) = (2240, 584)
    """
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k must be between 1 and n_experts={n_experts}; got {top_k}")
    expert = 2 * d_model * d_hidden + (d_hidden + d_model if bias else 0)
    router = d_model * n_experts
    return router + n_experts * expert, router + top_k * expert


class TinyLM(nn.Module):
    """A small next-character model whose one feed-forward layer is either dense or an MoE.

        the last n_context tokens -> embed and concatenate -> linear to d   (the "context vector")
        h = h + ffn(layernorm(h))        ffn: an Expert (dense MLP) or an MoE layer
        logits = head(layernorm(h))      scores for the next token

    No attention, so it trains in seconds on a CPU; the comparison dense vs MoE is all in `ffn`.
    forward(idx (batch, n_context)) -> logits (batch, vocab).
    """

    def __init__(self, vocab_size: int, n_context: int, d_model: int, ffn: nn.Module, d_embed: int = 16):
        super().__init__()
        self.n_context = n_context
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.mix = nn.Linear(n_context * d_embed, d_model)
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = ffn
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.shape[1] != self.n_context:
            raise ValueError(f"idx must be (batch, n_context={self.n_context}); got shape {tuple(idx.shape)}")
        h = self.mix(self.embed(idx).flatten(1))    # (B, n_context * d_embed) -> (B, d)
        h = h + self.ffn(self.ln1(h))               # (B, d)
        return self.head(self.ln2(h))               # (B, vocab)


def context_windows(tokens: torch.Tensor, n_context: int, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs tokens[s : s+n_context] and targets tokens[s+n_context] for each start s.

        tokens [5 6 7 8 9], n_context 2, starts [0, 2]  ->  x [[5 6], [7 8]], y [7 9]
    """
    x = tokens[starts[:, None] + torch.arange(n_context)]   # (B, n_context)
    return x, tokens[starts + n_context]                      # (B,)


def train_lm(model: TinyLM, train_tokens: torch.Tensor, val_tokens: torch.Tensor, *, steps: int = 300,
             batch_size: int = 256, lr: float = 3e-3, aux_weight: float = 0.0, eval_every: int = 25,
             seed: int = 0, desc: str = "training") -> TrainingHistory:
    """Train with AdamW on next-token loss + aux_weight x the MoE's load-balancing loss.

    Returns the TrainingHistory: the training loss (next-token loss, without the auxiliary loss)
    of every step and the validation loss (nats per token, on 2,048 fixed windows) every
    `eval_every` steps and after the last one.
    """
    check_number(aux_weight, "aux_weight", minimum=0)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n = model.n_context
    val_x, val_y = context_windows(val_tokens, n, torch.randint(len(val_tokens) - n, (2048,),
                                                              generator=torch.Generator().manual_seed(1234)))
    optimizer = make_optimizer(model, TrainConfig(learning_rate=lr, min_lr=lr, weight_decay=0.0, beta2=0.999),
                               next(model.parameters()).device)
    history = TrainingHistory()
    model.train()
    for step in tqdm(range(steps + 1), desc=desc, leave=False, mininterval=1.0):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad(), eval_mode(model):
                history.val_loss.append(F.cross_entropy(model(val_x), val_y).item())
            history.val_step.append(step)
        if step == steps:
            break
        x, y = context_windows(train_tokens, n, torch.randint(len(train_tokens) - n, (batch_size,), generator=g))
        loss = F.cross_entropy(model(x), y)                 # the next-token loss, what the history records
        aux = model.ffn.aux_loss if isinstance(model.ffn, MoE) else torch.tensor(0.0)
        optimizer_step(model, optimizer, loss + aux_weight * aux, grad_clip=0.0)
        history.step.append(step)
        history.train_loss.append(loss.item())
    return history
