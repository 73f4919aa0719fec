"""Saving and loading models safely: weights as safetensors, training state as plain tensors.

Two promises:

* **Loading never runs code.** Weights are safetensors (a header plus raw numbers); the
  training state (optimizer, random number generators, step) is saved with `torch.save` and
  read back with `torch.load(weights_only=True)`, which only rebuilds tensors, numbers, strings,
  lists and dicts.
* **A crash never leaves you without a good checkpoint.** Every file is written to a temporary
  file in the same folder, flushed to disk (fsync), then renamed over the old one with
  `os.replace`, which is atomic: a reader sees the old file or the new one, never half of one.

A training checkpoint is a folder holding `weights-<step>.safetensors` and `state.pt`. The
state file is written last and names the weights file it belongs to (with its SHA-256), so it
is the "commit": a run killed between the two writes still has the previous, consistent pair.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import safetensors.torch
import torch

from llmcourse.model import GPT, GPTConfig, unwrap
from llmcourse.tokenizers import CharTokenizer

STATE_FILE = "state.pt"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())          # the bytes are on disk before the rename
    os.replace(tmp, path)             # atomic on POSIX and Windows
    if hasattr(os, "O_DIRECTORY"):    # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _weights(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict without the tied output layer (it IS the token embedding; stored once)."""
    state = model.state_dict()
    if model.config.tie_weights:
        state.pop("lm_head.weight")
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def weights_bytes(model, metadata: dict | None = None) -> bytes:
    """The model's weights as safetensors bytes, its config (JSON) in the header."""
    model = unwrap(model)
    meta = {"config": json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return safetensors.torch.save(_weights(model), metadata=meta)


def save_weights(path, model, metadata: dict | None = None) -> None:
    """Write the model's weights (and config) to a .safetensors file, atomically."""
    atomic_write_bytes(path, weights_bytes(model, metadata))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        data = path.read_bytes()
        tensors = safetensors.torch.load(data)
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except FileNotFoundError:
        raise ValueError(f"no weights file at {path}") from None
    except Exception as e:  # safetensors raises its own error types for a short or garbled file
        raise ValueError(f"{path} is not a complete safetensors file (truncated or corrupt?): {e}") from None
    if "config" not in metadata:
        raise ValueError(f"{path} has no GPT config in its header; expected a file written by save_weights")
    return tensors, metadata


def _check_config(expected: GPTConfig, found: GPTConfig, source) -> None:
    if expected != found:
        diffs = ", ".join(f"{k}: file {v} vs model {getattr(expected, k)}"
                          for k, v in found.to_dict().items() if getattr(expected, k) != v)
        raise ValueError(f"{source} was saved from a different model config ({diffs}); expected {expected}")


def load_weights(path, model: GPT | None = None, device=None) -> GPT:
    """Load weights from a .safetensors file into `model` (or into a new GPT built from the file's config).

    A file made for another config, or a truncated file, is refused with a ValueError.
    """
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    config = GPTConfig.from_dict(json.loads(metadata["config"]))
    if model is None:
        model = GPT(config)
    raw = unwrap(model)
    _check_config(raw.config, config, path)
    missing, unexpected = raw.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_weights else set()
    if set(missing) != tied or unexpected:
        raise ValueError(f"{path} does not hold this model's tensors: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.to(device) if device is not None else model


def save_checkpoint(out_dir, model, optimizer, step: int, state: dict | None = None) -> Path:
    """Save weights + optimizer + `state` (RNG states, history: tensors, numbers, strings) for `step`.

    Returns the path of the state file. Older weights files in out_dir are removed afterwards.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_name = f"weights-{step:07d}.safetensors"
    blob = weights_bytes(model, {"step": step})
    atomic_write_bytes(out_dir / weights_name, blob)                      # 1) the weights
    record = {"step": step, "weights_file": weights_name,
              "weights_sha256": hashlib.sha256(blob).hexdigest(),
              "optimizer": optimizer.state_dict(), "state": state or {}}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    atomic_write_bytes(out_dir / STATE_FILE, buffer.getvalue())           # 2) the commit
    for old in out_dir.glob("weights-*.safetensors"):                     # 3) tidy up
        if old.name != weights_name:
            old.unlink()
    return out_dir / STATE_FILE


def has_checkpoint(out_dir) -> bool:
    return (Path(out_dir) / STATE_FILE).exists()


def load_checkpoint(out_dir, model, optimizer=None) -> tuple[int, dict]:
    """Restore model (and optimizer) from the checkpoint in out_dir; return (step, state).

    Refuses, with a ValueError, a truncated or corrupt file, weights that do not match the state
    file, and a checkpoint made for a different config.
    """
    out_dir = Path(out_dir)
    state_path = out_dir / STATE_FILE
    if not state_path.exists():
        raise ValueError(f"no checkpoint in {out_dir}: expected a {STATE_FILE} there")
    try:
        record = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a short file is an EOFError/RuntimeError/UnpicklingError deep inside
        raise ValueError(f"{state_path} is not a complete checkpoint (truncated or corrupt?): {e}") from None
    weights_path = out_dir / record["weights_file"]
    if not weights_path.exists():
        raise ValueError(f"{state_path} names {weights_path.name}, which is missing")
    if hashlib.sha256(weights_path.read_bytes()).hexdigest() != record["weights_sha256"]:
        raise ValueError(f"{weights_path} does not match the checksum recorded in {state_path} "
                         f"(truncated or corrupt?)")
    load_weights(weights_path, model)
    if optimizer is not None:
        optimizer.load_state_dict(record["optimizer"])
    return record["step"], record["state"]


# --- Small trained models shipped with the package -------------------------------------------

@dataclass
class Pretrained:
    """A shipped model: the GPT, its tokenizer, and what its JSON file records (val loss, data, ...)."""

    model: GPT
    tokenizer: CharTokenizer
    info: dict


def _checkpoint_dir():
    return resources.files("llmcourse").joinpath("datafiles/checkpoints")


def list_pretrained() -> list[str]:
    """Names of the shipped checkpoints, e.g. ['markov_order2', 'python_docs_char']."""
    return sorted(p.name[:-5] for p in _checkpoint_dir().iterdir() if p.name.endswith(".json"))


def load_pretrained(name: str, device=None) -> Pretrained:
    """Load a shipped checkpoint by name (well under a second): model in eval mode, tokenizer, info."""
    names = list_pretrained()
    if name not in names:
        raise ValueError(f"no shipped checkpoint named {name!r}; expected one of {names}")
    folder = _checkpoint_dir()
    info = json.loads(folder.joinpath(f"{name}.json").read_text())
    with resources.as_file(folder.joinpath(f"{name}.safetensors")) as path:
        model = load_weights(path, device=device)
    _check_config(model.config, GPTConfig.from_dict(info["config"]), f"{name}.json")
    tokenizer = CharTokenizer("".join(info["vocab"]))
    if tokenizer.vocab != info["vocab"]:
        raise ValueError(f"{name}.json's vocab is not sorted distinct characters; expected a CharTokenizer vocab")
    return Pretrained(model=model.eval(), tokenizer=tokenizer, info=info)
