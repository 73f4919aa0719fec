"""Train the two-layer attention-only model of unit 15 until an induction head forms; ship it.

    LLMCOURSE_THREADS=1 python scripts/make_induction_head.py        # about a minute on one core

Writes src/llmcourse/datafiles/induction_head.safetensors (weights, config in the header) and
induction_head.json (config, training settings, the history of losses and head scores, and the
final losses on the fixed evaluation batch, which tests/test_induction_checkpoint.py recomputes).
The data are random tokens in which a random segment occurs twice at random places
(`interpret.segment_repeat_batch`), so no fixed positional offset can do the copying.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import safetensors.torch
import torch

import llmcourse
from llmcourse import interpret

OUT = Path(__file__).resolve().parents[1] / "src" / "llmcourse" / "datafiles"
MODEL = dict(vocab_size=32, context_length=32, n_layers=2, d_model=64, n_heads=2)
TRAIN = dict(steps=4000, batch_size=32, lr=1e-2, segment_lengths=(6, 16), seed=0, eval_every=100)


def main() -> None:
    llmcourse.setup(seed=TRAIN["seed"], device="cpu", style=False)
    model = interpret.AttentionOnlyTransformer(**MODEL)
    start = time.perf_counter()
    history = interpret.train_attention_only(model, **TRAIN)
    seconds = time.perf_counter() - start
    info = {"name": "induction_head", "config": MODEL, "train": TRAIN, "history": history,
            "eval_batch": {"n": 256, "seed": TRAIN["seed"] + 1,
                           "how": "interpret.segment_repeat_batch(n, 32, 32, segment_lengths, Generator(seed))"},
            "copy_loss": round(history["copy_loss"][-1], 6), "other_loss": round(history["other_loss"][-1], 6),
            "train_seconds": round(seconds, 1), "torch": torch.__version__}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(tensors, OUT / "induction_head.safetensors", metadata={"config": json.dumps(MODEL)})
    (OUT / "induction_head.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{TRAIN['steps']} steps in {seconds:.0f} s: loss on copyable targets {info['copy_loss']:.3f}, "
          f"on the others {info['other_loss']:.3f} nats")


if __name__ == "__main__":
    main()
