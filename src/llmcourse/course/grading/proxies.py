"""Proxies: what a test cell sees in place of the student's names.

A test cell runs in the grader's process; each student name it uses (`softmax`) is a `Remote`.
Calling it sends the arguments to the worker, which calls the student's function and sends back
the result as plain data. Objects that are not plain data (a model, a generator) come back as
another `Remote`, a handle to the object in the worker.
"""
from __future__ import annotations

import contextlib
import pickle
import re
from typing import Any

import torch

from llmcourse.course.grading import wire
from llmcourse.course.grading.errors import GradingError, remote_exception, text
from llmcourse.course.grading.session import Session


class Remote:
    """A student's function or object that lives in the worker; calls are forwarded, answers are data."""

    def __init__(self, session: Session, target: tuple, name: str, type_name: str = "function") -> None:
        self.__dict__.update(_session=session, _target=target, __name__=name, __qualname__=name,
                             _type_name=type_name)

    def _op(self, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        session: Session = self.__dict__["_session"]
        name = self.__dict__["__name__"]
        generators: list = []
        kwargs = kwargs or {}
        packed = (wire.pack_arguments(args, generators), wire.pack_arguments(kwargs, generators))
        try:
            answer = session.request(("op", op, self.__dict__["_target"], *packed), f"{name}(...)" if op == "call" else name)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise GradingError(f"the grader cannot send these arguments to the notebook's process ({exc})") from None
        result = unwrap(session, answer, name)
        if op == "call":  # carry back in-place changes to tensors and generators
            originals = wire.tensors_in((args, kwargs))
            after = answer.get("after")
            if isinstance(after, list) and len(after) == len(originals):
                for mine, theirs in zip(originals, after):
                    if (isinstance(theirs, type(mine)) and theirs.shape == mine.shape
                            and theirs.dtype == mine.dtype and not _equal(mine, theirs)):
                        with torch.no_grad():
                            mine.copy_(theirs)
            states = answer.get("generators")
            if isinstance(states, list) and len(states) == len(generators):
                for generator, state in zip(generators, states):
                    with contextlib.suppress(Exception):
                        generator.set_state(state)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._op("call", args, kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._op("getattr", (attr,))

    def __getitem__(self, key: Any) -> Any:
        return self._op("getitem", (key,))

    def __len__(self) -> int:
        value = self._op("len")
        if not isinstance(value, int):
            raise TypeError("len() of the student's object is not an int")
        return value

    def __iter__(self):
        return iter(self._op("iter"))

    def __repr__(self) -> str:
        return f"<student's {self.__dict__['_type_name']} {self.__dict__['__name__']}>"


_REMOTE_TYPES: dict[str, type] = {}


def _remote_class(type_name: str) -> type:
    """A Remote subclass named like the student's type, so messages read "got Evil <...>"."""
    safe = re.sub(r"\W", "_", type_name.split(".")[-1])[:60] or "Remote"
    return _REMOTE_TYPES.setdefault(safe, type(safe, (Remote,), {}))


def _equal(a, b) -> bool:
    try:
        return bool(torch.equal(a, b))
    except Exception:
        return False


def unwrap(session: Session, answer: dict, name: str) -> Any:
    """The worker's answer as what the test sees: plain data, a proxy for an object, or the
    student's exception raised here."""
    kind = answer.get("kind")
    if kind == "value":
        return answer.get("value")
    if kind == "object":
        handle = answer.get("handle")
        if not isinstance(handle, int):
            raise GradingError(f"{name}: malformed answer from the notebook's process")
        type_name = text(answer.get("type"), 80)
        return _remote_class(type_name)(session, ("handle", handle), f"{name}(...)", type_name)
    if kind == "items":
        items = answer.get("items")
        if not isinstance(items, list):
            raise GradingError(f"{name}: malformed answer from the notebook's process")
        return [unwrap(session, item, f"{name}[{i}]") for i, item in enumerate(items) if isinstance(item, dict)]
    if kind == "raised":
        raise remote_exception(text(answer.get("type"), 80), text(answer.get("message")),
                               text(answer.get("traceback"), 3000))
    raise GradingError(f"{name}: unexpected answer from the notebook's process")


def lookup(session: Session, name: str) -> tuple[bool, Any]:
    """(found, value) for a name of the student's notebook: plain data as itself, anything else as a proxy."""
    answer = session.describe(name)
    if answer.get("kind") == "missing":
        return False, None
    if answer.get("kind") == "value":
        return True, answer.get("value")
    return True, Remote(session, ("name", name), name, text(answer.get("type"), 80))
