"""The optimizer, from scratch: Adam(W)'s step, its moving averages, and what its state costs.

    g = gradient
    m = β1 m + (1 − β1) g          a moving average of the gradient       ("momentum")
    v = β2 v + (1 − β2) g²         a moving average of the squared gradient (its scale)
    m̂ = m / (1 − β1^t)             bias correction: m and v start at 0, so early averages are too small
    v̂ = v / (1 − β2^t)
    θ = θ − lr (m̂ / (√v̂ + ε) + λ θ)    AdamW: weight decay λ θ added outside the average

`adam_step` is that update in plain tensor code; tests prove it equals `torch.optim.Adam` and
`torch.optim.AdamW` step after step. `ema_window` says how many past gradients a β averages
over, and `adam_state_bytes` / `adafactor_state_bytes` what the optimizer must remember.
"""
from __future__ import annotations

import math

import torch

from llmcourse.validate import is_int


def adam_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, *,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step (AdamW if weight_decay > 0); returns the new (param, m, v). Inputs are not changed.

    step counts from 1 (the first update is step 1). All tensors share one shape.

        >>> p, g = torch.tensor([1.0]), torch.tensor([0.5])
        >>> adam_step(p, g, torch.zeros(1), torch.zeros(1), 1, lr=0.1)[0]   # first step: lr · sign(g)
        tensor([0.9000])
    """
    if step < 1:
        raise ValueError(f"step counts from 1 (the first update); got {step}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1); got {beta}")
    if not (param.shape == grad.shape == m.shape == v.shape):
        raise ValueError(f"param, grad, m and v must share one shape; got {tuple(param.shape)}, "
                         f"{tuple(grad.shape)}, {tuple(m.shape)}, {tuple(v.shape)}")
    m = beta1 * m + (1 - beta1) * grad                  # average of the gradient
    v = beta2 * v + (1 - beta2) * grad * grad           # average of its square
    m_hat = m / (1 - beta1 ** step)                     # undo the pull towards the zero start
    v_hat = v / (1 - beta2 ** step)
    param = param * (1 - lr * weight_decay)             # AdamW: decay the weight itself, not the gradient
    param = param - lr * m_hat / (v_hat.sqrt() + eps)   # a step of about lr in each coordinate
    return param, m, v


def ema(values, beta: float) -> list[float]:
    """Exponential moving average with bias correction, as Adam keeps it: one output per input.

        >>> ema([1.0, 1.0, 1.0], 0.9)   # bias correction: a constant input is averaged to itself
        [1.0, 1.0, 1.0]
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1); got {beta}")
    out, avg = [], 0.0
    for t, x in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * float(x)
        out.append(avg / (1 - beta ** t))
    return out


def ema_window(beta: float) -> float:
    """How many recent values an EMA with this β effectively averages: 1 / (1 − β).

    The weights (1 − β) β^k sum to 1 and have mean age β / (1 − β); the window is 1 / (1 − β).

        >>> ema_window(0.9), round(ema_window(0.999))
        (10.000000000000002, 1000)
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1); got {beta}")
    return 1.0 / (1.0 - beta)


def adam_state_bytes(shape: tuple[int, ...], dtype_bytes: int = 4) -> int:
    """Bytes of Adam's state for one parameter tensor: two moments (m and v), each the tensor's full size.

        >>> adam_state_bytes((1024, 4096))     # 2 x 4 MiB x 4 bytes
        33554432
    """
    _check_shape(shape)
    return 2 * math.prod(shape) * dtype_bytes


def adafactor_state_bytes(shape: tuple[int, ...], dtype_bytes: int = 4) -> int:
    """Bytes of Adafactor's state (no momentum) for one tensor: a factored second moment.

    For an r x c matrix Adafactor keeps only the row sums (r numbers) and column sums (c numbers) of
    the squared gradients and rebuilds v ≈ row ⊗ col / total: r + c numbers instead of r · c.
    Tensors with fewer than 2 dimensions keep the full v. (Higher-rank tensors factor the last two axes.)

        >>> adafactor_state_bytes((1024, 4096))   # (1024 + 4096) x 4 bytes
        20480
    """
    _check_shape(shape)
    if len(shape) < 2:
        return math.prod(shape) * dtype_bytes
    *lead, r, c = shape
    return math.prod(lead) * (r + c) * dtype_bytes


def adafactor_second_moment(grad: torch.Tensor) -> torch.Tensor:
    """Adafactor's rank-1 estimate of grad² for a matrix, rebuilt from its row and column sums.

    g² (r, c) -> R = row sums (r,), C = column sums (c,) -> v ≈ R C / sum(R)   (exact when g² has rank 1)
    """
    if grad.dim() != 2:
        raise ValueError(f"grad must be a matrix (rows, cols); got shape {tuple(grad.shape)}")
    sq = grad * grad                                 # (r, c)
    row, col = sq.sum(dim=1), sq.sum(dim=0)          # (r,), (c,)
    return torch.outer(row, col) / row.sum()         # (r, c)


def _check_shape(shape) -> None:
    if not isinstance(shape, (tuple, list)) or len(shape) == 0 or any(
            not is_int(s) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints; got {shape!r}")
