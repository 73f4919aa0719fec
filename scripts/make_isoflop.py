"""The IsoFLOP experiment of unit 09: at each of a few compute budgets, train models of several
sizes, each for exactly the tokens its budget buys, and record their validation losses.

    LLMCOURSE_THREADS=1 python scripts/make_isoflop.py          # about 13 minutes on one core

Budget C (FLOPs) = 6 N D, with N = count_parameters(config) and D the training tokens, so a model
of N parameters trains for D = C / (6 N) tokens: round(D / tokens_per_step) optimizer steps, with
warm-up and a cosine decay fitted to that length (Hoffmann et al. 2022 stress this: a schedule
longer than the run makes short runs look worse). Sizes whose step count would fall outside
STEPS_RANGE are skipped. Every (budget, size) pair is trained with SEEDS (weights and batches).

The data are the course's Markov source (32 symbols, order 1), whose entropy rate is known, so
the fitted irreducible loss E can be compared with the truth. Writes
src/llmcourse/datafiles/isoflop_markov.json; tests/test_recorded_scaling.py re-trains one run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import llmcourse
from llmcourse.data import random_markov_source
from llmcourse.model import GPT, GPTConfig, count_parameters
from llmcourse.train import TrainConfig, sequential_loss, train

OUT = Path(__file__).resolve().parents[1] / "src" / "llmcourse" / "datafiles" / "isoflop_markov.json"
SOURCE = dict(alphabet="abcdefghijklmnopqrstuvwxyz012345", order=1, concentration=0.5, seed=0)
N_TRAIN, N_VAL = 400_000, 20_000
CONTEXT, BATCH = 8, 16                   # 128 tokens per step
WIDTHS = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
BUDGETS = [1e8, 3e8, 1e9, 3e9]
STEPS_RANGE = (25, 2500)
SEEDS = [0, 1, 2]
LR = 2e-2


def model_config(width: int) -> GPTConfig:
    return GPTConfig(vocab_size=len(SOURCE["alphabet"]), context_length=CONTEXT, n_layers=1, d_model=width, n_heads=1)


def steps_for(budget: float, width: int) -> int:
    """Optimizer steps that spend `budget` FLOPs on a model of this width: D = C / (6 N) tokens."""
    return round(budget / (6 * count_parameters(model_config(width))) / (BATCH * CONTEXT))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    source = random_markov_source(**SOURCE)
    return source.sample(N_TRAIN, seed=1), source.sample(N_VAL, seed=2)


def run(width: int, steps: int, seed: int, train_tokens: torch.Tensor, val_tokens: torch.Tensor) -> float:
    """Train one model for `steps` steps; its loss on the whole validation sample (nats/token)."""
    llmcourse.seed_everything(seed)
    model = GPT(model_config(width))
    config = TrainConfig(max_steps=steps, batch_size=BATCH, learning_rate=LR, min_lr=LR / 10,
                         warmup_steps=max(1, steps // 20), eval_interval=10 ** 9, eval_batches=1, seed=seed)
    train(model, train_tokens, val_tokens, config, progress=False)
    return sequential_loss(model, val_tokens)


def main() -> None:
    llmcourse.setup(seed=0, device="cpu", style=False)
    train_tokens, val_tokens = data()
    source = random_markov_source(**SOURCE)
    runs = []
    for seed in SEEDS:
        for budget in BUDGETS:
            for width in WIDTHS:
                steps = steps_for(budget, width)
                if not STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]:
                    continue
                start = time.perf_counter()
                loss = run(width, steps, seed, train_tokens, val_tokens)
                runs.append({"budget": budget, "width": width, "parameters": count_parameters(model_config(width)),
                             "steps": steps, "tokens": steps * BATCH * CONTEXT, "seed": seed,
                             "val_loss": round(loss, 6), "seconds": round(time.perf_counter() - start, 2)})
                print(runs[-1], flush=True)
        record = {"source": SOURCE, "n_train": N_TRAIN, "n_val": N_VAL, "context_length": CONTEXT,
                  "batch_size": BATCH, "learning_rate": LR, "widths": WIDTHS, "budgets": BUDGETS,
                  "steps_range": STEPS_RANGE, "seeds": SEEDS, "entropy_rate": round(source.entropy_rate(), 6),
                  "how": "val_loss: llmcourse.train.sequential_loss on all n_val validation tokens",
                  "torch": torch.__version__, "runs": runs}
        OUT.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
