"""Seeds, device and threads: the three things every notebook sets first.

`setup()` does all three (and applies the course's plot style) in one call, so that a notebook
prints the same numbers on every run, on a machine with any number of cores, and runs at a
predictable speed on a small shared machine.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from llmcourse.validate import check_int

DEVICES = ("auto", "cpu", "cuda", "mps")


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy and torch (CPU and every GPU) with the same integer."""
    check_int(seed, "seed", 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the device to compute on: `preferred`, else $LLMCOURSE_DEVICE, else the best available.

    "auto" picks CUDA if there is a GPU, then Apple's MPS, then the CPU. Asking for a device that
    this machine does not have is an error rather than a silent fall-back, so a benchmark never
    measures the wrong thing.
    """
    name = (preferred or os.environ.get("LLMCOURSE_DEVICE") or "auto").lower()
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (cuda:N allowed); got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this machine has no CUDA GPU; use 'cpu' or 'auto'")
    if name == "mps" and not _mps_available():
        raise ValueError("device 'mps' was asked for, but this machine has no Apple GPU; use 'cpu' or 'auto'")
    return torch.device(name)


def default_threads() -> int:
    """How many CPU threads torch should use: $LLMCOURSE_THREADS, else a load-tolerant default.

    On a machine with two cores or fewer we use one thread. Two threads are faster on an idle
    machine (about 1.45x), but when anything else runs they fight over the cores and a step can
    take ten times longer; one thread slows down gently. With more cores we use half of the
    logical CPUs (hyper-threads share a core), at most 8.
    """
    configured = os.environ.get("LLMCOURSE_THREADS")
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"LLMCOURSE_THREADS must be a positive integer; got {configured!r}")
        return int(configured)
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(8, cpus // 2)


def notebook_threads() -> int:
    """How many CPU threads the notebooks use: $LLMCOURSE_THREADS, else one.

    The number of threads changes the order in which torch adds up some sums (a matrix product,
    a LayerNorm's gradient), and so their last bits. In a small training run such a difference can
    grow: an argmax flips, a batch goes another way, and the run ends elsewhere (unit 12 shows it).
    The stored outputs, and the numbers the lessons quote, come from one thread; with one thread a
    notebook prints them again on a machine with any number of cores. Set LLMCOURSE_THREADS for
    speed instead, and expect numbers that differ.
    """
    return default_threads() if os.environ.get("LLMCOURSE_THREADS") else 1


def setup(seed: int = 0, device: str | None = None, threads: int | None = None,
          style: bool = True, quiet: bool = False) -> torch.device:
    """Seed everything, set torch's thread count, apply the plot style; return the device.

    seed: the seed for Python, NumPy and torch.   device: "auto", "cpu", "cuda" or "mps".
    threads: torch CPU threads (default: `notebook_threads()`, one).   style: apply `plots.use_course_style()`.
    """
    seed_everything(seed)
    n_threads = notebook_threads() if threads is None else threads
    check_int(n_threads, "threads")
    torch.set_num_threads(n_threads)
    chosen = pick_device(device)
    if style:
        from llmcourse.plots import use_course_style

        use_course_style()
    if not quiet:
        print(f"llmcourse: seed {seed}, device {chosen}, {n_threads} torch thread{'s' * (n_threads > 1)}")
    return chosen
