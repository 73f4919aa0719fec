"""Train the small checkpoints that later units load, and write them into the package.

    LLMCOURSE_THREADS=1 python scripts/make_checkpoints.py            # all of them
    LLMCOURSE_THREADS=1 python scripts/make_checkpoints.py markov_order2

Each checkpoint is two files in src/llmcourse/datafiles/checkpoints/: NAME.safetensors (the
weights, config in the header) and NAME.json (config, tokenizer vocabulary, how it was trained,
and its validation loss on a fixed slice of the validation tokens, which tests recompute).
Seeded: a rerun with the same torch version and thread count should give the same weights (not
checked by a test: training takes minutes).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

import llmcourse
from llmcourse import checkpoints
from llmcourse.data import random_markov_source
from llmcourse.model import GPT, GPTConfig, count_parameters
from llmcourse.train import TrainConfig, load_data, sequential_loss, train

OUT = Path(__file__).resolve().parents[1] / "src" / "llmcourse" / "datafiles" / "checkpoints"

RUNS = {
    # Character-level GPT on the Python documentation, at nanoGPT's CPU model size, trained for
    # about 12 passes over the training text (5,000 steps of 16 windows of 64 characters).
    "python_docs_char": dict(
        data={"source": "python_docs"},
        model=dict(n_layers=4, d_model=128, n_heads=4, context_length=64, dropout=0.0),
        train=TrainConfig(max_steps=5000, batch_size=16, learning_rate=2e-3, min_lr=2e-4, warmup_steps=200,
                          eval_interval=500, eval_batches=10, seed=0),
        val_tokens=20_000,
    ),
    # A GPT on the synthetic order-2 Markov source, whose entropy rate is the best possible loss.
    "markov_order2": dict(
        data={"source": "markov", "alphabet": "abcdefgh", "order": 2, "concentration": 0.3, "seed": 0,
              "n_train": 200_000, "n_val": 20_000},
        model=dict(n_layers=2, d_model=64, n_heads=4, context_length=32, dropout=0.0),
        train=TrainConfig(max_steps=800, batch_size=32, learning_rate=2e-3, min_lr=2e-4, warmup_steps=50,
                          eval_interval=200, eval_batches=10, seed=0),
        val_tokens=20_000,
    ),
}


def make(name: str) -> dict:
    run = RUNS[name]
    llmcourse.setup(seed=run["train"].seed, device="cpu", style=False)
    train_tokens, val_tokens, vocab = load_data(run["data"])
    config = GPTConfig(vocab_size=len(vocab), **run["model"])
    model = GPT(config)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        history = train(model, train_tokens, val_tokens, run["train"], out_dir=tmp)
    seconds = time.perf_counter() - start
    val_slice = val_tokens[: run["val_tokens"] + 1]
    info = {
        "name": name,
        "config": config.to_dict(),
        "vocab": vocab,
        "data": run["data"],
        "train": asdict(run["train"]),
        "parameters": count_parameters(config),
        "val_slice": {"first_tokens": run["val_tokens"] + 1,
                      "how": "llmcourse.train.sequential_loss on the first first_tokens validation tokens"},
        "val_loss": round(sequential_loss(model, val_slice), 6),
        "final_train_loss": round(sum(history.train_loss[-50:]) / 50, 4),
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }
    if run["data"]["source"] == "markov":
        spec = {k: v for k, v in run["data"].items() if k not in ("source", "n_train", "n_val")}
        info["entropy_rate"] = round(random_markov_source(**spec).entropy_rate(), 6)
    OUT.mkdir(parents=True, exist_ok=True)
    checkpoints.save_weights(OUT / f"{name}.safetensors", model)
    checkpoints.atomic_write_bytes(OUT / f"{name}.json", (json.dumps(info, indent=1) + "\n").encode())
    print(f"{name}: val loss {info['val_loss']:.4f}"
          + (f" (entropy floor {info['entropy_rate']:.4f})" if "entropy_rate" in info else "")
          + f", {info['parameters']:,} parameters, trained in {seconds:.0f} s")
    return info


if __name__ == "__main__":
    for name in sys.argv[1:] or list(RUNS):
        make(name)
