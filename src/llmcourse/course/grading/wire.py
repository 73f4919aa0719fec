"""The pipe between the grader and a student's worker process: framing and safe values.

Messages are length-prefixed byte strings. The grader -> worker direction carries pickles (the
grader is trusted; the worker is not, so it has nothing to protect). The worker -> grader direction
carries only `torch.save` payloads that the grader opens with `torch.load(weights_only=True)`:
tensors, numbers, strings, bytes, lists, tuples, dicts, sets, dtypes and devices. Nothing the
worker sends can run code in the grader. A few other common answers (NumPy arrays and scalars,
frozensets, named tuples) are wrapped by the worker into those types and unwrapped by the grader.

A `torch.Generator` cannot be pickled: it travels as its device and state, and its state after
the call comes back, so a check that draws from a generator after the student's function did sees
the same numbers it would in one process.
"""
from __future__ import annotations

import io
import os
import select
import struct
import time
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

HEADER = struct.Struct(">Q")
MAX_MESSAGE = 256 * 2**20  # bytes; a bigger answer is refused, not read
MAX_STRUCTURE = 8 * 2**20  # bytes of pickled structure (all but tensor data) in one message
TAG = "__llmcourse_wire__"  # key of a dict that stands for a value the safe loader cannot carry


class WireError(Exception):
    """The other side sent nothing, too much, or something that is not a safe value."""


class Unsupported(TypeError):
    """A value that cannot travel as data (a function, a model, an open file, ...)."""


@dataclass
class GeneratorState:
    """A torch.Generator in transit: its device and its state tensor."""
    device: str
    state: torch.Tensor


# --- framing ---------------------------------------------------------------------------------------

def send(fd: int, payload: bytes, deadline: float | None = None) -> None:
    """Write one message; raise TimeoutError past `deadline` (time.monotonic) if the reader stalls."""
    data = memoryview(HEADER.pack(len(payload)) + payload)
    while data:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError("the other side stopped reading")
        data = data[os.write(fd, data[: 1 << 16]):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer in time")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(fd: int, deadline: float | None = None, limit: int = MAX_MESSAGE) -> bytes:
    """Read one message; EOFError if the writer is gone, TimeoutError past `deadline`, WireError if too big."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > limit:
        raise WireError(f"a message of {size:,} bytes is over the limit of {limit:,}")
    return _read_exact(fd, size, deadline)


# --- worker side: any value -> safe tree -------------------------------------------------------------

_NUMPY_DTYPES = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
                 torch.float32, torch.float64, torch.complex64, torch.complex128}
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def to_safe(value: Any, depth: int = 0) -> Any:
    """A copy of `value` made only of types that torch.load(weights_only=True) accepts; Unsupported if none."""
    if depth > 50:
        raise Unsupported("nested more than 50 levels deep")
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            value = value.as_subclass(torch.Tensor)
        return value.detach() if value.requires_grad and type(value) is torch.Tensor else value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise Unsupported(f"a NumPy array of dtype {value.dtype}")
        return {TAG: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biufc":
            raise Unsupported(f"a NumPy scalar of dtype {value.dtype}")
        return {TAG: "npscalar", "dtype": value.dtype.str, "value": value.item()}
    if type(value) in _PLAIN or isinstance(value, torch.Size):
        return value
    if isinstance(value, (bool, int, float, complex, str, bytes)):  # subclasses: keep the plain value
        for base in (bool, int, float, complex, str, bytes):
            if isinstance(value, base):
                return base(value)
    if isinstance(value, tuple):
        items = tuple(to_safe(v, depth + 1) for v in value)
        return items if type(value) is tuple else items  # named tuples arrive as plain tuples
    if isinstance(value, list):
        return [to_safe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if TAG in value:
            raise Unsupported("a dict that uses the grader's own wire tag")
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None), tuple)):
                raise Unsupported(f"a dict with a {type(k).__name__} key")
            out[to_safe(k, depth + 1)] = to_safe(v, depth + 1)
        return out
    if isinstance(value, frozenset):
        return {TAG: "frozenset", "items": [to_safe(v, depth + 1) for v in value]}
    if isinstance(value, set):
        return {TAG: "set", "items": [to_safe(v, depth + 1) for v in value]}
    raise Unsupported(f"a {type(value).__module__}.{type(value).__qualname__}")


def dump(value: Any) -> bytes:
    """torch.save bytes of a safe tree (raise Unsupported if `value` is not one)."""
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
    except Exception as exc:
        raise Unsupported(f"cannot be saved ({type(exc).__name__}: {exc})") from None
    return buffer.getvalue()


# --- grader side: bytes -> value, never running code ------------------------------------------------

def _structure_size(payload: bytes) -> int:
    """The size of the pickled structure inside a torch.save payload (a zip): what the unpickler walks."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            pickles = [info for info in archive.infolist() if info.filename.endswith(".pkl")]
            if len(pickles) != 1:
                raise WireError("not a plain value (not one torch.save payload)")
            return pickles[0].file_size
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise WireError("not a plain value (not a torch.save payload)") from None


def load(payload: bytes) -> Any:
    """Open a worker's message with the safe loader; WireError if it holds anything else.

    The pickled structure is capped (MAX_STRUCTURE bytes) before the unpickler starts, so the work
    here is bounded; the grader's own time limit bounds the rest (see Limits.grader_s)."""
    size = _structure_size(payload)
    if size > MAX_STRUCTURE:
        raise WireError(f"an answer whose structure takes {size:,} bytes, over the limit of {MAX_STRUCTURE:,} "
                        "(a list or dict of millions of items?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch's message advises loading it unsafely: never shown
        raise WireError(f"not a plain value ({type(exc).__name__}: it holds something other than tensors, "
                        "numbers, strings and containers)") from None


def _ndarray(value: dict) -> np.ndarray:
    data = value.get("data")
    if type(data) is not torch.Tensor or data.dtype not in _NUMPY_DTYPES or data.layout != torch.strided:
        raise WireError("a malformed 'ndarray' wrapper")
    return data.numpy()


def _npscalar(value: dict) -> np.generic:
    dtype_text, number = value.get("dtype"), value.get("value")
    if type(dtype_text) is not str or len(dtype_text) > 8 or type(number) not in (bool, int, float, complex):
        raise WireError("a malformed 'npscalar' wrapper")
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise WireError(f"unknown NumPy dtype {dtype_text!r}") from None
    if dtype.kind not in "biufc":
        raise WireError(f"NumPy dtype {dtype} is not numeric")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return dtype.type(number)
    except (OverflowError, ValueError, TypeError, RuntimeWarning, DeprecationWarning) as exc:
        raise WireError(f"a NumPy {dtype} cannot hold {str(number)[:40]} ({type(exc).__name__})") from None


def _set(kind: str, value: dict, depth: int) -> set | frozenset:
    items = value.get("items")
    if type(items) is not list:
        raise WireError(f"a malformed {kind!r} wrapper")
    result: set = set()
    for item in items:  # one at a time: items built to collide stay interruptible by the grader's time limit
        try:
            result.add(from_safe(item, depth + 1))
        except TypeError:
            raise WireError(f"a {kind} of unhashable items") from None
    return result if kind == "set" else frozenset(result)


def from_safe(value: Any, depth: int = 0) -> Any:
    """Undo the worker's wrapping (NumPy arrays and scalars, sets). Nothing in a wrapper is trusted:
    its types and sizes are checked, and a wrong one is a WireError."""
    if depth > 60:
        raise WireError("nested too deeply")
    if type(value) is dict and TAG in value:
        kind = value[TAG]
        if kind == "ndarray":
            return _ndarray(value)
        if kind == "npscalar":
            return _npscalar(value)
        if kind in ("set", "frozenset"):
            return _set(kind, value, depth)
        raise WireError(f"a malformed {str(kind)[:40]!r} wrapper")
    if isinstance(value, list):
        return [from_safe(v, depth + 1) for v in value]
    if isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(from_safe(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return type(value)((k, from_safe(v, depth + 1)) for k, v in value.items())
    return value


def decode(payload: bytes) -> Any:
    """Bytes from the worker -> the value they stand for (WireError if they are not a safe value).

    Any failure while decoding, of any type, is a WireError: a forged payload may make NumPy or
    torch raise anything, and that must cost the submission, never the grader."""
    value = load(payload)
    try:
        return from_safe(value)
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"an answer that cannot be decoded ({type(exc).__name__})") from None


# --- arguments: grader -> worker ---------------------------------------------------------------------

def pack_arguments(value: Any, generators: list) -> Any:
    """Replace every torch.Generator in (nested) arguments by a GeneratorState; collect the originals."""
    if isinstance(value, torch.Generator):
        generators.append(value)
        return GeneratorState(str(value.device), value.get_state())
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(pack_arguments(v, generators) for v in value)
    if isinstance(value, list):
        return [pack_arguments(v, generators) for v in value]
    if isinstance(value, dict) and type(value) is dict:
        return {k: pack_arguments(v, generators) for k, v in value.items()}
    return value


def unpack_arguments(value: Any, generators: list) -> Any:
    """Worker side of pack_arguments: GeneratorState -> a torch.Generator with that state."""
    if isinstance(value, GeneratorState):
        generator = torch.Generator(device=value.device)
        generator.set_state(value.state)
        generators.append(generator)
        return generator
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(unpack_arguments(v, generators) for v in value)
    if isinstance(value, list):
        return [unpack_arguments(v, generators) for v in value]
    if isinstance(value, dict) and type(value) is dict:
        return {k: unpack_arguments(v, generators) for k, v in value.items()}
    return value


def tensors_in(value: Any, found: list | None = None) -> list:
    """Every tensor in (nested) arguments, in a fixed order: how in-place changes are carried back."""
    found = [] if found is None else found
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            tensors_in(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            tensors_in(v, found)
    return found
