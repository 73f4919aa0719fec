"""What each part of a transformer buys: the ablation ladder of unit 06, recorded.

    LLMCOURSE_THREADS=1 python scripts/make_ablation_ladder.py          # all rungs, 3 seeds, both data sets
    LLMCOURSE_THREADS=1 python scripts/make_ablation_ladder.py --quick  # one seed (a smoke run)

Starting from token embeddings and a linear head (a bigram model in disguise), the ladder adds one
part at a time, each rung keeping everything below it:

    bigram: embeddings + head  ->  + one attention head  ->  + several heads  ->  + MLP
      ->  + residual connections  ->  + LayerNorm  ->  + positions (= a 1-block GPT)  ->  + depth

Every rung trains with the same data, steps, batch, learning-rate schedule and seeds, and is scored
on the same slice of validation tokens. Two data sets: the
Python documentation (one token per character), with the n-gram models of unit 01 as reference
lines, and the synthetic order-2 Markov source of unit 01, whose entropy rate is the floor.

The result goes to src/llmcourse/datafiles/ablation_ladder.json; tests/test_recorded_ablation.py
re-trains one point and compares it with the record.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import llmcourse
from llmcourse import checkpoints
from llmcourse.data import random_markov_source
from llmcourse.model import MLP, GPTConfig
from llmcourse.multihead import MultiHeadAttention
from llmcourse.ngram import NGramModel
from llmcourse.train import TrainConfig, get_batch, load_data, lr_at, make_optimizer, train_step

OUT = Path(__file__).resolve().parents[1] / "src" / "llmcourse" / "datafiles" / "ablation_ladder.json"

# The rungs, bottom to top: each adds one part to the one before.
RUNGS = [
    ("bigram: embeddings + head", dict(n_heads=0, mlp=False, residual=False, layernorm=False, positions=False, n_layers=1)),
    ("+ one attention head", dict(n_heads=1, mlp=False, residual=False, layernorm=False, positions=False, n_layers=1)),
    ("+ several heads (4)", dict(n_heads=4, mlp=False, residual=False, layernorm=False, positions=False, n_layers=1)),
    ("+ MLP", dict(n_heads=4, mlp=True, residual=False, layernorm=False, positions=False, n_layers=1)),
    ("+ residual connections", dict(n_heads=4, mlp=True, residual=True, layernorm=False, positions=False, n_layers=1)),
    ("+ LayerNorm", dict(n_heads=4, mlp=True, residual=True, layernorm=True, positions=False, n_layers=1)),
    ("+ positions (a 1-block GPT)", dict(n_heads=4, mlp=True, residual=True, layernorm=True, positions=True, n_layers=1)),
    ("+ depth (2 blocks)", dict(n_heads=4, mlp=True, residual=True, layernorm=True, positions=True, n_layers=2)),
]

DATASETS = {
    "python_docs": dict(
        data={"source": "python_docs"}, d_model=64, context_length=64, val_tokens=20_000, ngram_orders=range(1, 8),
        train=TrainConfig(max_steps=800, batch_size=16, learning_rate=1e-2, min_lr=1e-3, warmup_steps=25,
                          eval_interval=500, eval_batches=2)),
    "markov_order2": dict(
        data={"source": "markov", "alphabet": "abcdefgh", "order": 2, "concentration": 0.3, "seed": 0,
              "n_train": 200_000, "n_val": 20_000},
        d_model=32, context_length=32, val_tokens=20_000, ngram_orders=range(1, 6),
        train=TrainConfig(max_steps=500, batch_size=32, learning_rate=1e-2, min_lr=1e-3, warmup_steps=25,
                          eval_interval=500, eval_batches=2)),
}
SEEDS = (0, 1, 2)


class LadderModel(nn.Module):
    """A GPT with parts that can be left out. forward(idx, targets) -> (logits, loss), like `GPT`.

    n_heads=0: no attention.  mlp, residual, layernorm, positions: each part on or off.
    With everything on it computes what `llmcourse.model.GPT` computes with `tie_weights=False` (pre-norm
    blocks). The head is never tied to the embedding: a tied head would make the bottom rung's bigram
    table E E^T symmetric (the score of "b after a" forced equal to "a after b").
    """

    def __init__(self, vocab_size: int, d_model: int, context_length: int, *, n_heads: int, mlp: bool,
                 residual: bool, layernorm: bool, positions: bool, n_layers: int):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, context_length=context_length, n_layers=n_layers,
                                d_model=d_model, n_heads=max(n_heads, 1), tie_weights=False)   # what the trainer reads
        self.parts = dict(n_heads=n_heads, mlp=mlp, residual=residual, layernorm=layernorm, positions=positions)
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model) if positions else None
        norm = (lambda: nn.LayerNorm(d_model)) if layernorm else nn.Identity
        self.attn = nn.ModuleList([MultiHeadAttention(d_model, n_heads) for _ in range(n_layers)]) if n_heads else None
        self.mlp = nn.ModuleList([MLP(self.config) for _ in range(n_layers)]) if mlp else None
        self.ln1 = nn.ModuleList([norm() for _ in range(n_layers)])
        self.ln2 = nn.ModuleList([norm() for _ in range(n_layers)])
        self.ln_f = norm()
        self.head = nn.Linear(d_model, vocab_size, bias=False)             # vector -> a score per token
        for module in self.modules():           # GPT's initialisation: small normal weights, zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.tok_emb(idx)                                                # (B, T, d)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        for i in range(self.config.n_layers):
            if self.attn is not None:
                change = self.attn[i](self.ln1[i](x), causal=True)[0]        # (B, T, d)
                x = x + change if self.parts["residual"] else change
            if self.mlp is not None:
                change = self.mlp[i](self.ln2[i](x))                         # (B, T, d)
                x = x + change if self.parts["residual"] else change
        logits = self.head(self.ln_f(x))                                     # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss


def train_ladder_model(model: LadderModel, train_ids: torch.Tensor, config: TrainConfig) -> list[float]:
    """The library trainer's loop (AdamW, warm-up + cosine, clipping), for a model with parts left out."""
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, max_lr=config.learning_rate, min_lr=config.min_lr,
                                warmup_steps=config.warmup_steps, decay_steps=config.max_steps)
        x, y = get_batch(train_ids, config.batch_size, model.config.context_length, generator)   # (B, T) each
        losses.append(train_step(model, optimizer, x, y, config.grad_clip))
    return losses


@torch.no_grad()
def validation_loss(model: nn.Module, tokens: torch.Tensor) -> float:
    """Mean loss over `tokens` cut into consecutive windows (as `llmcourse.train.sequential_loss`)."""
    model.eval()
    T = model.config.context_length
    n = (len(tokens) - 1) // T
    x, y = tokens[: n * T].view(n, T), tokens[1: n * T + 1].view(n, T)   # (n, T) each
    return model(x, y)[1].item()


def run_rung(dataset: str, rung: int, seed: int) -> dict:
    """Train one rung of the ladder on one data set with one seed; return its record."""
    spec = DATASETS[dataset]
    llmcourse.setup(seed=seed, device="cpu", style=False)
    train_ids, val_ids, vocab = load_data(spec["data"])
    model = LadderModel(len(vocab), spec["d_model"], spec["context_length"], **RUNGS[rung][1])
    config = TrainConfig(**{**asdict(spec["train"]), "seed": seed})
    start = time.perf_counter()
    losses = train_ladder_model(model, train_ids, config)
    return {"seed": seed,
            "val_loss": round(validation_loss(model, val_ids[: spec["val_tokens"] + 1]), 5),
            "train_loss_last_50": round(sum(losses[-50:]) / 50, 5),
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.perf_counter() - start, 1)}


def reference_lines(dataset: str) -> dict:
    """The n-gram models' validation losses (and the entropy floor, for the Markov source)."""
    spec = DATASETS[dataset]
    train_ids, val_ids, vocab = load_data(spec["data"])
    val_ids = val_ids[: spec["val_tokens"] + 1]
    lines = {f"{n}-gram": round(NGramModel.fit(train_ids, n, vocab_size=len(vocab), smoothing="interpolated")
                                .cross_entropy(val_ids), 5) for n in spec["ngram_orders"]}
    lines["uniform guess"] = round(math.log(len(vocab)), 5)
    if spec["data"]["source"] == "markov":
        source = {k: v for k, v in spec["data"].items() if k not in ("source", "n_train", "n_val")}
        lines["entropy floor"] = round(random_markov_source(**source).entropy_rate(), 5)
    return lines


def main(argv: list[str]) -> None:
    seeds = SEEDS[:1] if "--quick" in argv else SEEDS
    record = {"how": "scripts/make_ablation_ladder.py; validation loss: mean over consecutive windows of the "
                     "first val_tokens + 1 validation tokens, in nats per token",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "datasets": {}}
    total = time.perf_counter()
    for dataset, spec in DATASETS.items():
        rungs = []
        for i, (name, parts) in enumerate(RUNGS):
            runs = [run_rung(dataset, i, seed) for seed in seeds]
            losses = torch.tensor([r["val_loss"] for r in runs])
            print(f"{dataset:>14} | {name:<30} | val {losses.mean():.3f} (min {losses.min():.3f}, max "
                  f"{losses.max():.3f}) | {runs[0]['parameters']:,} params | {sum(r['seconds'] for r in runs):.0f} s",
                  flush=True)
            rungs.append({"name": name, "parts": parts, "runs": runs})
        record["datasets"][dataset] = {
            "data": spec["data"], "d_model": spec["d_model"], "context_length": spec["context_length"],
            "val_tokens": spec["val_tokens"], "train": asdict(spec["train"]), "rungs": rungs,
            "reference": reference_lines(dataset)}
    record["total_seconds"] = round(time.perf_counter() - total, 1)
    checkpoints.atomic_write_bytes(OUT, (json.dumps(record, indent=1) + "\n").encode())
    print(f"wrote {OUT} in {record['total_seconds']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
