"""Training speed: our GPT and trainer against nanoGPT, side by side, in one process.

    python benchmarks/train_speed.py --nanogpt DIR        # DIR holds nanoGPT's model.py

nanoGPT (github.com/karpathy/nanoGPT) is not part of this course: check out its model.py into
a folder of your own and point --nanogpt at it. Both models train at nanoGPT's documented CPU
configuration (4 layers, 4 heads, width 128, context 64, batch 12, dropout 0, no biases as in
its train.py), character-level on the course's Python documentation, on the same batches, with
the same optimizer settings (AdamW, weight decay 0.1 on matrices, gradient clipping at 1.0).

The machine may be shared, so runs are interleaved in many short rounds (a few steps of ours,
of nanoGPT, of ours without compilation, then again ...) and each ratio reported is the median
of the per-round ratios: a burst of load from elsewhere hits one round, not one contestant.
Model-FLOPs utilisation (MFU) is the useful arithmetic (6N + 12LTd per token,
`model.training_flops_per_token`) per second, divided by the fp32 matmul peak measured in the
same round; the median over rounds is reported.

What ours does differently, each a choice a student can follow:
  * AdamW(fused=True): one kernel updates every parameter, instead of a handful of small
    operations per parameter tensor (nanoGPT asks for it on CUDA only);
  * torch.compile: turns the many small element-wise operations of a step (LayerNorm, GELU,
    residual additions, the loss) into a few generated C++ loops. It costs a compilation (a
    minute or more on 2 cores, then cached on disk), so the course turns it on for long runs
    only (TrainConfig.compile); the "ours (eager)" row is the speed without it.
Both sides already use a fused query/key/value layer and PyTorch's fused
scaled_dot_product_attention (on a CPU at context 64 the flash kernel beats a plain
matmul-softmax-matmul attention, compiled or not), and the same number of threads.
What bounds the gain: in fp32 a step of this model is dominated by matrix multiplications
(about 63% of the time even compiled, attention 14%), which no reorganisation of the Python
code makes faster; bfloat16 helps only on CPUs with native bf16 instructions. Two lines at the
end make this visible:
  * the ceiling: the speed of a step that did only its matrix multiplications (at the peak
    measured in the same round) and its attention (PyTorch's kernel, timed in the same round),
    with everything else free; nothing built on these kernels can beat it here;
  * where the time goes: the profiler's self time of each contestant's step, split into
    matmuls, attention, GELU and everything else.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llmcourse.data import python_docs
from llmcourse.model import GPT, GPTConfig, training_flops_per_token
from llmcourse.runtime import default_threads
from llmcourse.tokenizers import CharTokenizer
from llmcourse.train import TrainConfig, get_batch, make_optimizer, train_step

LAYERS, HEADS, WIDTH, CONTEXT, BATCH = 4, 4, 128, 64, 12


def matmul_peak_flops(n: int = 512, repeats: int = 10) -> float:
    """fp32 FLOP/s of a square matmul, best of a few tries: the machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start))
    return best


def attention_seconds(repeats: int = 5) -> float:
    """Seconds per training step spent in causal attention itself (forward and backward through
    PyTorch's scaled_dot_product_attention, all layers), best of a few tries."""
    q, k, v = (torch.randn(BATCH, HEADS, CONTEXT, WIDTH // HEADS, requires_grad=True) for _ in range(3))
    grad = torch.randn(BATCH, HEADS, CONTEXT, WIDTH // HEADS)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats * LAYERS):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            torch.autograd.grad(out, (q, k, v), grad)  # the backward pass, without accumulating .grad
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def time_by_kind(side: "Side", steps: int = 5) -> dict:
    """Where a training step's time goes: self CPU time per kind of operation, from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        side.run(steps)
    side.speeds.pop()  # a profiled run is slower: keep it out of the speed figures
    kinds = {"matmuls": 0.0, "attention": 0.0, "GELU": 0.0, "everything else": 0.0}
    for event in prof.key_averages():
        name = event.key
        if name in ("aten::mm", "aten::addmm", "aten::bmm"):
            kind = "matmuls"
        elif "scaled_dot_product" in name:
            kind = "attention"
        elif "gelu" in name:
            kind = "GELU"
        else:
            kind = "everything else"
        kinds[kind] += event.self_cpu_time_total / 1e6 / steps
    return kinds


def load_nanogpt(folder: str):
    path = Path(folder) / "model.py"
    if not path.exists():
        raise SystemExit(f"--nanogpt {folder}: expected nanoGPT's model.py in that folder")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Side:
    """One contestant: a model, its optimizer, a batch stream and its FLOPs per token."""

    def __init__(self, name, model, optimizer, flops_per_token, tokens, step_model=None):
        self.name, self.model, self.optimizer = name, model, optimizer
        self.step_model = model if step_model is None else step_model
        self.flops_per_token, self.tokens = flops_per_token, tokens
        self.generator = torch.Generator().manual_seed(0)
        self.speeds = []

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            x, y = get_batch(self.tokens, BATCH, CONTEXT, self.generator)
            train_step(self.step_model, self.optimizer, x, y, grad_clip=1.0)
        speed = steps * BATCH * CONTEXT / (time.perf_counter() - start)
        self.speeds.append(speed)
        return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt", required=True, help="folder holding nanoGPT's model.py")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per round and side (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: runtime.default_threads())")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd contestant")
    args = parser.parse_args()

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    corpus = python_docs()
    tokenizer = CharTokenizer(corpus.text)
    tokens = torch.tensor(tokenizer.encode(corpus.train))
    V = tokenizer.vocab_size
    print(f"torch {torch.__version__}, {threads} thread(s); {LAYERS} layers, {HEADS} heads, width {WIDTH}, "
          f"context {CONTEXT}, batch {BATCH}, vocabulary {V}")

    train_config = TrainConfig(learning_rate=1e-3, beta2=0.99, weight_decay=0.1)
    config = GPTConfig(vocab_size=V, context_length=CONTEXT, n_layers=LAYERS, d_model=WIDTH, n_heads=HEADS,
                       dropout=0.0, bias=False)
    flops = training_flops_per_token(config)

    ng = load_nanogpt(args.nanogpt)
    torch.manual_seed(0)
    theirs = ng.GPT(ng.GPTConfig(block_size=CONTEXT, vocab_size=V, n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH,
                                 dropout=0.0, bias=False))
    their_flops = 6 * theirs.get_num_params() + 12 * LAYERS * CONTEXT * WIDTH  # their estimate_mfu's formula
    their_opt = theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")

    sides = []
    if not args.no_compile:
        torch.manual_seed(0)
        ours = GPT(config)
        compiled = torch.compile(ours)
        sides.append(Side("ours (compiled)", ours, make_optimizer(ours, train_config, torch.device("cpu")),
                          flops, tokens, step_model=compiled))
    sides.append(Side("nanoGPT", theirs, their_opt, their_flops, tokens))
    torch.manual_seed(0)
    eager = GPT(config)
    sides.append(Side("ours (eager)", eager, make_optimizer(eager, train_config, torch.device("cpu")), flops, tokens))

    start = time.perf_counter()
    for side in sides:  # warm-up: first steps allocate memory, load kernels, compile
        side.run(3)
        side.speeds.clear()
    print(f"warm-up (including compilation): {time.perf_counter() - start:.0f} s")

    peaks, attention = [], []
    for r in range(args.rounds):
        peaks.append(matmul_peak_flops())
        attention.append(attention_seconds())
        line = [f"round {r + 1:2d}: peak {peaks[-1] / 1e9:5.1f} GFLOP/s"]
        for side in sides:
            line.append(f"{side.name} {side.run(args.steps):7,.0f}")
        print(" | ".join(line) + " tokens/s", flush=True)

    base = next(s for s in sides if s.name == "nanoGPT")
    print(f"\nfp32 matmul peak, median of rounds: {statistics.median(peaks) / 1e9:.1f} GFLOP/s "
          f"(best {max(peaks) / 1e9:.1f}); FLOPs per token: ours {flops:,}, nanoGPT {their_flops:,}")
    print(f"{'':16s} {'tokens/s':>9s} {'MFU':>6s}   vs nanoGPT (median of per-round ratios)")
    for side in sides:
        speed = statistics.median(side.speeds)
        mfu = statistics.median(v * side.flops_per_token / p for v, p in zip(side.speeds, peaks))
        ratio = statistics.median(a / b for a, b in zip(side.speeds, base.speeds))
        print(f"{side.name:16s} {speed:9,.0f} {mfu:6.1%}   {ratio:.2f}x")

    # The ceiling: a step that did nothing but its matrix multiplications at the measured peak and
    # its attention at PyTorch's speed, everything else (LayerNorm, GELU, residuals, loss,
    # optimizer) free. Nothing built on these kernels can go faster on this machine.
    matmul_flops = training_flops_per_token(config) - 12 * LAYERS * CONTEXT * WIDTH
    ceilings = [BATCH * CONTEXT / (BATCH * CONTEXT * matmul_flops / p + a) for p, a in zip(peaks, attention)]
    ceiling_ratio = statistics.median(c / b for c, b in zip(ceilings, base.speeds))
    print(f"{'ceiling':16s} {statistics.median(ceilings):9,.0f} {'':6s}   {ceiling_ratio:.2f}x   "
          f"(matmuls at the peak + attention, all else free)")

    # Compiled kernels mix GELU, LayerNorm and additions, so only the eager contestants are split.
    profiled = [side for side in sides if side.name != "ours (compiled)"]
    rounds = 4
    print(f"\nWhere a step's time goes (milliseconds per step, from the profiler, {rounds} interleaved runs "
          f"of {args.steps} steps):")
    kinds = {side.name: {} for side in profiled}
    for _ in range(rounds):
        for side in profiled:
            for kind, seconds in time_by_kind(side, args.steps).items():
                kinds[side.name][kind] = kinds[side.name].get(kind, 0.0) + seconds / rounds
    for name, split in kinds.items():
        total = sum(split.values())
        print(f"{name:16s} " + "  ".join(f"{kind} {seconds * 1e3:5.1f} ({seconds / total:4.0%})"
                                          for kind, seconds in split.items()))


if __name__ == "__main__":
    sys.exit(main())
