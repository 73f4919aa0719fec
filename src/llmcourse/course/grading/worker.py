"""The student's side of grading: a process that runs one submission's cells and answers calls.

The grader starts one *zygote* per batch (`python -m llmcourse.course.grading.worker --zygote FD`) that
imports torch and the course once; for each submission it forks a worker, which enters its
sandbox (own session, limits, as root user nobody in PID, network and mount namespaces of its
own; Landlock where the kernel has it), says hello, then serves requests over two pipes until
the grader closes them or kills it:

    ("exec", seq, index, source)             run one notebook cell in the student's namespace
    ("describe", seq, name)                  is `name` defined? data (sent by value) or an object?
    ("op", seq, op, target, args, kwargs)    call / getattr / getitem / len / iter on a student object

Everything here is untrusted once student code has run: the grader opens each answer with the
safe loader and never believes more than "this is a plain value". Work on the student's text
(rewriting IPython magics) happens here too, under the cell's time limit. What the student prints
fills at most `Limits.output_bytes`; the rest is dropped and counted, never fatal.
"""
from __future__ import annotations

import builtins
import contextlib
import json
import linecache
import os
import pickle
import signal
import socket
import sys
import traceback
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager

import llmcourse
from llmcourse.course.grading import sandbox, wire


def _display(*objects: Any, **_: Any) -> None:
    """Stands in for IPython's display(): print each object's text form."""
    for obj in objects:
        print(repr(obj))


class _NoIPython:
    """Stands in for get_ipython(): magics and shell commands (%timeit, !pip) do nothing when grading."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class CappedOutput:
    """sys.stdout and sys.stderr of the worker: text goes to a file descriptor until `limit` bytes,
    the rest is dropped and counted. A write never fails (a full disk or file size limit included)."""

    encoding, errors = "utf-8", "replace"

    def __init__(self, fd: int, budget: dict) -> None:
        self.fd, self.budget = fd, budget  # budget: {"left": bytes, "dropped": bytes}, shared by both streams

    def write(self, text: str) -> int:
        data = str(text).encode("utf-8", "replace")
        keep = data[: max(0, self.budget["left"])]
        self.budget["left"] -= len(keep)
        self.budget["dropped"] += len(data) - len(keep)
        try:
            while keep:
                keep = keep[os.write(self.fd, keep):]
        except OSError:
            self.budget["dropped"] += len(keep)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd


def python_source(source: str) -> str:
    """A student's cell as plain Python: IPython magics and !commands become get_ipython() calls."""
    if "%" not in source and "!" not in source:
        return source
    return TransformerManager().transform_cell(source)


class Worker:
    def __init__(self, request_fd: int, reply_fd: int, output: dict) -> None:
        self.output = output
        self.request_fd, self.reply_fd = request_fd, reply_fd
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins,
                                          "display": _display, "get_ipython": _NoIPython}
        self.handles: dict[int, Any] = {}

    # --- answers --------------------------------------------------------------------------------
    def reply(self, message: dict) -> None:
        message = {**message, "dropped": self.output["dropped"]}
        try:
            payload = wire.dump(message)
        except wire.Unsupported as exc:  # should not happen: every value was made safe first
            payload = wire.dump({"seq": message.get("seq"), "kind": "raised", "type": "GradingError",
                                      "message": f"the answer could not be sent ({exc})", "traceback": ""})
        wire.send(self.reply_fd, payload)

    def describe_value(self, value: Any, seq: int) -> dict:
        """A value to send: as data if it is plain data, else as a handle the grader can call."""
        try:
            safe = wire.to_safe(value)
            message = {"seq": seq, "kind": "value", "value": safe}
            wire.dump(message)  # proves it can be sent
            return message
        except wire.Unsupported:
            handle = len(self.handles) + 1
            self.handles[handle] = value
            try:
                text = repr(value)[:300]
            except BaseException:
                text = f"<{type(value).__name__}>"
            return {"seq": seq, "kind": "object", "handle": handle, "type": type(value).__qualname__,
                    "callable": callable(value), "repr": text}

    @staticmethod
    def raised(seq: int, exc: BaseException) -> dict:
        try:
            message = str(exc)[:2000]
        except BaseException:
            message = "(its message could not be printed)"
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        inside = [line for line in lines if 'File "<cell' in line or not line.startswith("  File ")]
        return {"seq": seq, "kind": "raised", "type": type(exc).__name__, "message": message,
                "traceback": "".join(inside)[-3000:]}

    # --- requests -------------------------------------------------------------------------------
    def exec_cell(self, seq: int, index: int, source: str) -> dict:
        filename = f"<cell {index}>"
        try:
            source = python_source(source)
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            code = compile(source, filename, "exec")
            exec(code, self.namespace)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the cell failed, we go on
            return self.raised(seq, exc)
        return {"seq": seq, "kind": "done"}

    def target(self, target: tuple) -> Any:
        kind, key = target
        if kind == "name":
            if key not in self.namespace:
                raise NameError(f"name {key!r} is not defined")
            return self.namespace[key]
        if key not in self.handles:
            raise LookupError("this object was lost when the notebook's process was restarted")
        return self.handles[key]

    def op(self, seq: int, op: str, target: tuple, args: tuple, kwargs: dict) -> dict:
        generators: list = []
        try:
            obj = self.target(target)
            args = wire.unpack_arguments(args, generators)
            kwargs = wire.unpack_arguments(kwargs, generators)
            if op == "call":
                result = obj(*args, **kwargs)
            elif op == "getattr":
                result = getattr(obj, args[0])
            elif op == "getitem":
                result = obj[args[0]]
            elif op == "len":
                result = len(obj)
            elif op == "iter":
                items = list(obj)
                return {"seq": seq, "kind": "items",
                        "items": [self.describe_value(item, seq) for item in items[:10_000]]}
            elif op == "repr":
                result = repr(obj)[:2000]
            else:
                raise ValueError(f"unknown operation {op!r}")
        except BaseException as exc:
            return self.raised(seq, exc)
        message = self.describe_value(result, seq)
        if op == "call":
            try:  # in-place changes to tensor arguments and generators travel back
                message["after"] = [wire.to_safe(t) for t in wire.tensors_in((args, kwargs))]
                message["generators"] = [g.get_state() for g in generators]
            except BaseException:
                message["after"], message["generators"] = [], []
        return message

    def serve(self) -> None:
        while True:
            try:
                request = pickle.loads(wire.recv(self.request_fd))
            except KeyboardInterrupt:  # an interrupt that came after the student's code ended
                continue
            except EOFError:
                return
            seq = request[1]
            try:
                if request[0] == "exec":
                    answer = self.exec_cell(seq, request[2], request[3])
                elif request[0] == "describe":
                    name = request[2]
                    answer = (self.describe_value(self.namespace[name], seq) if name in self.namespace
                              else {"seq": seq, "kind": "missing"})
                elif request[0] == "op":
                    answer = self.op(seq, *request[2:])
                else:
                    answer = {"seq": seq, "kind": "raised", "type": "GradingError",
                              "message": f"unknown request {request[0]!r}", "traceback": ""}
            except BaseException as exc:
                answer = self.raised(seq, exc)
            try:
                self.reply(answer)
            except KeyboardInterrupt:
                self.reply(answer)


def readable_paths() -> list[str]:
    """What the sandboxed worker may read: the Python installation, its packages, the course package."""
    cwd = os.path.realpath(os.getcwd())
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(llmcourse.__file__),
             "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev", "/opt/conda"}
    for entry in sys.path:
        if entry and os.path.realpath(entry) != cwd and os.path.exists(entry):
            paths.add(entry)
    return sorted(os.path.realpath(p) for p in paths if os.path.exists(p))


def _preload() -> None:
    """Import what every submission needs, once: the forked workers inherit it (torch takes seconds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import llmcourse.checks.core  # noqa: F401
    import llmcourse.plots  # noqa: F401


def _redirect(log_fd: int) -> None:
    """stdin from /dev/null; stdout and stderr (of C code and subprocesses too) to the log file."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for fd in (devnull, log_fd):
        os.close(fd)


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(sandbox.NOBODY)
    os.setuid(sandbox.NOBODY)


def _python_is_readable() -> bool:
    """Whether this process can still read the standard library (to import what was not preloaded)."""
    try:
        os.listdir(os.path.dirname(os.__file__))
        with open(os.__file__, "rb"):
            return True
    except OSError:
        return False


def enter_sandbox(config: dict) -> dict:
    """Limits, namespaces, user and Landlock, in that order; returns the hello message that says
    what was applied and whether the worker is confined (the grader refuses to go on if not)."""
    identity = config["identity"]
    limits = sandbox.Limits(**config["limits"])
    network = sandbox.isolate_network()  # as root: before the capabilities go
    files, confined, why, python_readable = "", identity != "no-capabilities", "", True
    if identity == "nobody":
        try:
            files = sandbox.confine_files(readable_paths(), config.get("hide", []), config["scratch"])
        except OSError as exc:
            files = f"no mount namespace ({exc.strerror or exc})"
    sandbox.child_limits(limits, identity)()
    if identity == "nobody":
        _drop_to_nobody()
        python_readable = _python_is_readable()
        if not python_readable:
            confined, why = False, "user nobody cannot read this Python's standard library"
    applied = "none"
    if config.get("landlock"):
        applied = sandbox.landlock(readable_paths(), [config["scratch"], "/dev/null", "/dev/zero"])
        if config["landlock"] == "required" and applied == "unavailable":
            raise OSError("Landlock was required but this kernel does not offer it")
    landlocked = applied not in ("none", "unavailable")
    if identity == "nobody" and files.startswith("no mount namespace") and not landlocked:
        confined, why = False, f"as root with {files} and no Landlock, user nobody could read the solutions"
    if identity == "self" and not landlocked:
        confined, why = False, "not root, and no Landlock: the code runs as the grader's own user"
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {"seq": 0, "kind": "hello", "sandbox": applied, "network": network, "files": files,
            "uid": os.getuid(), "pid_namespace": os.getpid() == 1, "confined": confined, "why": why,
            "python_readable": python_readable,
            "capabilities": status.get("CapEff", "?").strip()}


def child(config: dict, fds: list[int]) -> None:
    """In a freshly forked child of the zygote: enter the sandbox, say hello, serve. Never returns."""
    request_fd, reply_fd, log_fd = fds
    output = {"left": config["limits"]["output_bytes"], "dropped": 0}
    try:
        os.setsid()
        _redirect(log_fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(config.get("cwd") or config["scratch"])
        os.environ.update(config["env"])
        hello = enter_sandbox(config)
        sys.stdout, sys.stderr = CappedOutput(1, output), CappedOutput(2, output)
    except BaseException as exc:
        hello = {"seq": 0, "kind": "raised", "type": type(exc).__name__, "message": str(exc)[:2000],
                 "traceback": traceback.format_exc()[-3000:]}
        wire.send(reply_fd, wire.dump(hello))
        os._exit(1)
    worker = Worker(request_fd, reply_fd, output)
    worker.reply(hello)
    worker.serve()
    os._exit(0)


def fork_worker(config: dict, fds: list[int], zygote_socket: int) -> int:
    """Fork a worker; as root, as the first process of a PID namespace of its own (when it dies, the
    kernel kills everything it started). Returns its pid as the zygote sees it."""
    if os.geteuid() != 0:
        pid = os.fork()
        if pid == 0:
            try:
                os.close(zygote_socket)
                child(config, fds)
            finally:
                os._exit(1)
        return pid
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # unshare(CLONE_NEWPID) applies to this process's next child: the worker
        try:
            os.close(read_end)
            os.close(zygote_socket)  # a worker must never ask for workers
            with contextlib.suppress(OSError):
                sandbox.unshare(sandbox.CLONE_NEWPID)
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                child(config, fds)
            os.write(write_end, str(pid).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        pid = int(answer.read() or b"-1")
    os.waitpid(middle, 0)  # the worker is now an orphan, and ours (we are a child subreaper)
    return pid


def zygote(sock_fd: int) -> int:
    """Serve the grader: for each request (a config and three file descriptors), fork a worker."""
    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sandbox.become_subreaper()  # orphans of the workers come to us, and the grader can find them
    _preload()
    sock.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3)
        except OSError:
            return 0
        if not message:
            return 0
        while True:  # collect finished workers (and adopted orphans)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        config = json.loads(message)
        pid = fork_worker(config, list(fds), sock.fileno())
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str]) -> int:
    if argv[:1] == ["--zygote"]:
        return zygote(int(argv[1]))
    print("usage: python -m llmcourse.course.grading.worker --zygote FD (started by the grader)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
