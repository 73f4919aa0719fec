"""Training a GPT: sample batches, predict the next token, nudge the weights, repeat.

    for each step:
        lr = lr_at(step)                     warm up, then cosine decay
        x, y = get_batch(train_tokens)       y is x shifted by one token
        loss = cross_entropy(model(x), y)    how surprised the model is, in nats per token
        loss.backward()                      gradients
        clip the gradient norm, AdamW step   a careful nudge
        every eval_interval: estimate the validation loss; every checkpoint_interval: save

Everything that decides the result is seeded and saved in checkpoints (weights, AdamW's
moments, both random number generators, the step), so a run killed half-way and resumed ends
with exactly the same weights as a run that never stopped.

Command line (also under `torchrun --nproc_per_node=N`, which trains with
DistributedDataParallel: each process takes its share of every batch, gradients are averaged):

    python -m llmcourse.train --config run.json --out-dir runs/tiny
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from llmcourse import checkpoints
from llmcourse.model import GPT, GPTConfig, eval_mode, training_flops_per_token, unwrap
from llmcourse.runtime import default_threads, pick_device, seed_everything
from llmcourse.validate import check_int


@dataclass(frozen=True)
class TrainConfig:
    """The training hyperparameters (defaults: nanoGPT's character-level CPU run)."""

    max_steps: int = 2000            # optimizer steps in the whole run
    batch_size: int = 12             # sequences per step (the global batch, over all processes)
    learning_rate: float = 1e-3      # peak learning rate, reached after warm-up
    min_lr: float = 1e-4             # the learning rate at the end of the cosine decay
    warmup_steps: int = 100          # steps of linear warm-up from ~0 to learning_rate
    decay_steps: int | None = None   # step where the decay reaches min_lr (None: max_steps)
    weight_decay: float = 0.1        # AdamW's pull of matrices towards 0 (not biases, LayerNorms)
    beta1: float = 0.9               # AdamW: memory of the gradient's mean
    beta2: float = 0.99              # AdamW: memory of the gradient's mean square
    grad_clip: float = 1.0           # rescale gradients whose norm exceeds this (0 = off)
    eval_interval: int = 250         # estimate the validation loss every this many steps
    eval_batches: int = 20           # ... on this many batches
    checkpoint_interval: int = 0     # save a checkpoint every this many steps (0: only at the end)
    seed: int = 0                    # seeds the weights, the batches and dropout
    compile: bool = False            # torch.compile the model (faster steps, ~a minute to compile)

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "eval_interval", "eval_batches"):
            check_int(getattr(self, name), f"TrainConfig.{name}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"TrainConfig needs 0 <= min_lr <= learning_rate; got {self.min_lr}, {self.learning_rate}")


@dataclass
class TrainingHistory:
    """What a training loop records; every training loop of the course returns one.

    step, train_loss: every optimizer step and the loss of its batch (nats per token).
    val_step, val_loss: the steps where the validation loss was measured, and that loss.
    lr, tokens_per_s: the learning rate and the speed of every step (empty if a loop keeps none).
    flops_per_token: the model's training FLOPs per token (None if a loop does not count them).
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    flops_per_token: int | None = None


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """The learning rate at `step`: linear warm-up, then a cosine decay to min_lr, then flat.

        >>> [round(lr_at(s, max_lr=1.0, min_lr=0.1, warmup_steps=2, decay_steps=6), 3) for s in range(8)]
        [0.5, 1.0, 1.0, 0.868, 0.55, 0.232, 0.1, 0.1]
    """
    # 1) linear warm-up: the first steps use small rates while AdamW's moment estimates settle
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    # 2) after the decay, hold the minimum
    if step >= decay_steps:
        return min_lr
    # 3) in between, follow half a cosine from max_lr down to min_lr
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def get_batch(tokens: torch.Tensor, batch_size: int, context_length: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows of tokens: inputs x and targets y = x shifted by one, (B, T) each.

        tokens [5 6 7 8 9], start 1, T=3  ->  x [6 7 8], y [7 8 9]
    """
    if tokens.dim() != 1 or len(tokens) < context_length + 1:
        raise ValueError(f"tokens must be a 1-d tensor of at least context_length + 1 = {context_length + 1} "
                         f"tokens; got shape {tuple(tokens.shape)}")
    starts = torch.randint(len(tokens) - context_length, (batch_size,), generator=generator)  # (B,)
    windows = tokens[starts[:, None] + torch.arange(context_length + 1)]                     # (B, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


@torch.no_grad()
def estimate_loss(model, tokens: torch.Tensor, batch_size: int, n_batches: int, seed: int = 1234) -> float:
    """Mean loss over n_batches random batches, always the same ones (own seeded generator)."""
    raw = unwrap(model)
    generator = torch.Generator().manual_seed(seed)
    device = next(raw.parameters()).device
    losses = []
    with eval_mode(raw):
        for _ in range(n_batches):
            x, y = get_batch(tokens, batch_size, raw.config.context_length, generator)
            losses.append(raw(x.to(device), y.to(device))[1].item())
    return sum(losses) / len(losses)


@torch.no_grad()
def sequential_loss(model, tokens: torch.Tensor, batch_size: int = 64) -> float:
    """Mean loss (nats/token) over `tokens` cut into consecutive, non-overlapping windows.

    Deterministic: the number a shipped checkpoint records and a test recomputes.
    """
    raw = unwrap(model)
    T = raw.config.context_length
    n = (len(tokens) - 1) // T
    if n < 1:
        raise ValueError(f"tokens must hold at least context_length + 1 = {T + 1} tokens; got {len(tokens)}")
    x = tokens[: n * T].view(n, T)          # (n, T)
    y = tokens[1: n * T + 1].view(n, T)     # (n, T)
    device = next(raw.parameters()).device
    total = 0.0
    with eval_mode(raw):
        for i in range(0, n, batch_size):
            x_i, y_i = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            total += raw(x_i, y_i)[1].item() * len(x_i)
    return total / n


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, grad_clip: float = 1.0) -> float:
    """One optimizer step on the batch (x, y); returns the batch's loss."""
    _, loss = model(x, y)
    optimizer_step(model, optimizer, loss, grad_clip)
    return loss.item()                          # waits for the step to finish (on a GPU)


def optimizer_step(model, optimizer, loss: torch.Tensor, grad_clip: float = 1.0) -> None:
    """Gradients of `loss`, clipped to norm grad_clip (0 = no clipping), then one optimizer step."""
    loss.backward()                             # under DDP: gradients averaged over the processes
    if grad_clip > 0:                           # one huge gradient must not wreck the weights
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)       # free the gradients instead of zero-filling them


def make_optimizer(model, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; the fused kernel (one pass over all parameters) if the device has it."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kwargs = dict(lr=config.learning_rate, betas=(config.beta1, config.beta2))
    try:  # fused: one kernel updates every tensor, instead of ~10 small ops per tensor
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # an older PyTorch or a device without the fused kernel
        return torch.optim.AdamW(groups, **kwargs)


class LivePlot:
    """A loss plot in a notebook that redraws itself as training goes."""

    def __init__(self):
        import matplotlib.pyplot as plt
        from IPython.display import display

        from llmcourse.plots import PALETTE

        self.fig, self.ax = plt.subplots(figsize=(7, 3.5))
        plt.close(self.fig)
        self.colors = list(PALETTE.values())
        self.handle = display(self.fig, display_id=True)

    def update(self, history: TrainingHistory) -> None:
        ax = self.ax
        ax.clear()
        ax.plot(history.step, history.train_loss, color=self.colors[0], lw=1, label="training batch")
        ax.plot(history.val_step, history.val_loss, color=self.colors[1], ls="--", marker="o", label="validation")
        ax.set(xlabel="step", ylabel="loss (nats / token)", title="Loss falls as the model learns")
        ax.legend()
        if self.handle is not None:  # None outside a notebook: nothing to redraw
            self.handle.update(self.fig)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(model: GPT, train_tokens: torch.Tensor, val_tokens: torch.Tensor, config: TrainConfig, *,
          out_dir=None, device=None, progress: bool = True, live_plot: bool = False) -> TrainingHistory:
    """Train `model` (a GPT, or a DistributedDataParallel-wrapped GPT) and return its history.

    out_dir: where checkpoints and the log (train.log) go; if it holds a checkpoint, training
    resumes from it (and from the history recorded so far).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    raw = unwrap(model)
    T = raw.config.context_length
    rank, world = _dist_info()
    if config.batch_size % world:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the number of processes ({world})")
    share = config.batch_size // world  # this process's rows of every global batch
    decay_steps = config.decay_steps or config.max_steps
    optimizer = make_optimizer(model, config, device)
    generator = torch.Generator().manual_seed(config.seed)  # batches: the same on every process
    history = TrainingHistory()
    start = 0
    log_path = Path(out_dir) / "train.log" if out_dir is not None else None
    if out_dir is not None and checkpoints.has_checkpoint(out_dir):
        start, state = checkpoints.load_checkpoint(out_dir, raw, optimizer)
        generator.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = TrainingHistory(**state["history"])
        _log(log_path, rank, f"resumed from the checkpoint at step {start}")
    step_model = torch.compile(model) if config.compile else model
    model.train()
    plot = LivePlot() if live_plot and rank == 0 else None
    bar = tqdm(range(start, config.max_steps), initial=start, total=config.max_steps,
               disable=not progress or rank != 0, desc="training")
    tokens_per_step = config.batch_size * T
    for step in bar:
        if step % config.eval_interval == 0:
            _validate(raw, val_tokens, config, step, history, log_path, rank, plot)
        t0 = time.perf_counter()
        lr = lr_at(step, max_lr=config.learning_rate, min_lr=config.min_lr,
                   warmup_steps=config.warmup_steps, decay_steps=decay_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_tokens, config.batch_size, T, generator)        # (B, T) each, global batch
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]  # this process's rows
        loss_value = train_step(step_model, optimizer, x.to(device), y.to(device), config.grad_clip)
        speed = tokens_per_step / (time.perf_counter() - t0)
        history.step.append(step)
        history.train_loss.append(loss_value)
        history.lr.append(lr)
        history.tokens_per_s.append(speed)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}")
        if step % 50 == 0:
            _log(log_path, rank, f"step {step:6d} | train loss {loss_value:.4f} | lr {lr:.2e} | {speed:,.0f} tokens/s")
        done = step + 1
        if out_dir is not None and (done == config.max_steps or
                                    (config.checkpoint_interval and done % config.checkpoint_interval == 0)):
            if rank == 0:
                state = {"batch_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
                         "history": asdict(history), "train_config": json.dumps(asdict(config))}
                if device.type == "cuda":
                    state["cuda_rng"] = torch.cuda.get_rng_state(device)
                checkpoints.save_checkpoint(out_dir, raw, optimizer, done, state)
            if world > 1:
                dist.barrier()
    _validate(raw, val_tokens, config, config.max_steps, history, log_path, rank, plot)  # the final weights
    history.flops_per_token = training_flops_per_token(raw.config)
    return history


def _validate(model, val_tokens, config, step, history, log_path, rank, plot) -> None:
    val = estimate_loss(model, val_tokens, config.batch_size, config.eval_batches)
    history.val_step.append(step)
    history.val_loss.append(val)
    _log(log_path, rank, f"step {step:6d} | val loss {val:.4f}")
    if plot:
        plot.update(history)


def _log(path, rank: int, line: str) -> None:
    if path is None or rank != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


# --- data for the command line ---------------------------------------------------------------

def load_data(spec: dict) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Token tensors (train, val) and the vocabulary for a data spec from a run's JSON config.

    {"source": "python_docs"}: the Python docs, one token per character.
    {"source": "markov", "alphabet": "abcdefgh", "order": 2, "concentration": 0.3, "seed": 0,
     "n_train": 200000, "n_val": 20000}: a sample of `data.random_markov_source`.
    """
    from llmcourse.data import python_docs, random_markov_source
    from llmcourse.tokenizers import CharTokenizer

    spec = dict(spec)
    source = spec.pop("source", None)
    if source == "python_docs":
        corpus = python_docs(**spec)
        tok = CharTokenizer(corpus.text)
        return (torch.tensor(tok.encode(corpus.train)), torch.tensor(tok.encode(corpus.val)), tok.vocab)
    if source == "markov":
        n_train, n_val = spec.pop("n_train", 200_000), spec.pop("n_val", 20_000)
        src = random_markov_source(**spec)
        return (src.sample(n_train, seed=1), src.sample(n_val, seed=2), list(src.alphabet))
    raise ValueError(f"data source must be 'python_docs' or 'markov'; got {source!r}")


def read_run_config(path) -> tuple[dict, dict, TrainConfig]:
    """A run's JSON file: {"data": {...}, "model": {GPTConfig fields}, "train": {TrainConfig fields}}.

    Returns (the data spec, the model's GPTConfig fields as a dict, the TrainConfig).
    """
    spec = json.loads(Path(path).read_text())
    unknown = set(spec) - {"data", "model", "train"}
    if unknown or "data" not in spec:
        raise ValueError(f"{path} must hold 'data', 'model' and 'train' sections; got {sorted(spec)}")
    train_fields = {f.name for f in fields(TrainConfig)}
    bad = set(spec.get("train", {})) - train_fields
    if bad:
        raise ValueError(f"unknown TrainConfig fields {sorted(bad)} in {path}; expected some of {sorted(train_fields)}")
    return spec["data"], spec.get("model", {}), TrainConfig(**spec.get("train", {}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON file with data, model and train sections")
    parser.add_argument("--out-dir", required=True, help="checkpoints and train.log go here; resumes if one exists")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: $LLMCOURSE_DEVICE or auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    data_spec, model_fields, config = read_run_config(args.config)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # set by torchrun
    device = pick_device(args.device)
    torch.set_num_threads(default_threads())
    if distributed:
        # gloo talks between CPU processes, NCCL between GPUs; torchrun provides the address.
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    train_tokens, val_tokens, vocab = load_data(data_spec)
    model_fields = {"vocab_size": len(vocab), **model_fields}
    if model_fields["vocab_size"] != len(vocab):
        raise ValueError(f"model.vocab_size ({model_fields['vocab_size']}) must equal the data's vocabulary size ({len(vocab)})")
    seed_everything(config.seed)  # the same initial weights in every process
    model = GPT(GPTConfig.from_dict(model_fields)).to(device)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    out_dir = Path(args.out_dir)
    history = train(model, train_tokens, val_tokens, config, out_dir=out_dir, device=device,
                    progress=not args.no_progress)
    if _dist_info()[0] == 0:
        checkpoints.save_weights(out_dir / "model.safetensors", model, {"vocab": json.dumps(vocab)})
        print(f"final val loss {history.val_loss[-1]:.4f}; weights in {out_dir / 'model.safetensors'}")
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
