"""The student's side of grading: a process that runs one submission's cells and answers calls.

The grader starts one *zygote* per batch (`python -m llmcourse.course.grading.worker --zygote FD`) that
imports torch and the course once; for each submission it forks a worker, which enters its
sandbox (own session, limits, user nobody or no capabilities, Landlock), says hello, then serves
requests over two pipes until the grader closes them or kills it:

    ("exec", seq, index, source)             run one notebook cell in the student's namespace
    ("describe", seq, name)                  is `name` defined? data (sent by value) or an object?
    ("op", seq, op, target, args, kwargs)    call / getattr / getitem / len / iter on a student object

Everything here is untrusted once student code has run: the grader opens each answer with the
safe loader and never believes more than "this is a plain value".
"""
from __future__ import annotations

import builtins
import json
import linecache
import os
import pickle
import signal
import sys
import traceback
from typing import Any


def _display(*objects: Any, **_: Any) -> None:
    """Stands in for IPython's display(): print each object's text form."""
    for obj in objects:
        print(repr(obj))


class _NoIPython:
    """Stands in for get_ipython(): magics and shell commands (%timeit, !pip) do nothing when grading."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class Worker:
    def __init__(self, request_fd: int, reply_fd: int) -> None:
        from llmcourse.course.grading import wire
        self.wire = wire
        self.request_fd, self.reply_fd = request_fd, reply_fd
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins,
                                          "display": _display, "get_ipython": _NoIPython}
        self.handles: dict[int, Any] = {}

    # --- answers --------------------------------------------------------------------------------
    def reply(self, message: dict) -> None:
        try:
            payload = self.wire.dump(message)
        except self.wire.Unsupported as exc:  # should not happen: every value was made safe first
            payload = self.wire.dump({"seq": message.get("seq"), "kind": "raised", "type": "GradingError",
                                      "message": f"the answer could not be sent ({exc})", "traceback": ""})
        sys.stdout.flush()
        sys.stderr.flush()
        self.wire.send(self.reply_fd, payload)

    def describe_value(self, value: Any, seq: int) -> dict:
        """A value to send: as data if it is plain data, else as a handle the grader can call."""
        try:
            safe = self.wire.to_safe(value)
            message = {"seq": seq, "kind": "value", "value": safe}
            self.wire.dump(message)  # proves it can be sent
            return message
        except self.wire.Unsupported:
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
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
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
            args = self.wire.unpack_arguments(args, generators)
            kwargs = self.wire.unpack_arguments(kwargs, generators)
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
                message["after"] = [self.wire.to_safe(t) for t in self.wire.tensors_in((args, kwargs))]
                message["generators"] = [g.get_state() for g in generators]
            except BaseException:
                message["after"], message["generators"] = [], []
        return message

    def serve(self) -> None:
        while True:
            try:
                request = pickle.loads(self.wire.recv(self.request_fd))
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
    import llmcourse
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
    import llmcourse  # noqa: F401
    import llmcourse.checks.core  # noqa: F401
    import llmcourse.plots  # noqa: F401
    from llmcourse.course.grading import sandbox, wire  # noqa: F401


def child(config: dict, fds: list[int]) -> None:
    """In a freshly forked child of the zygote: enter the sandbox, say hello, serve. Never returns."""
    from llmcourse.course.grading import sandbox, wire
    request_fd, reply_fd, log_fd = fds
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for fd in (devnull, log_fd):
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(config.get("cwd") or config["scratch"])
        os.environ.update(config["env"])
        limits = sandbox.Limits(**config["limits"])
        network = sandbox.isolate_network()  # as root: before the capabilities go
        sandbox.child_limits(limits, config["identity"])()
        if config["identity"] == "nobody":
            os.setgroups([])
            os.setgid(sandbox.NOBODY)
            os.setuid(sandbox.NOBODY)
        applied = "none"
        if config.get("landlock"):
            applied = sandbox.landlock(readable_paths(), [config["scratch"], "/dev/null", "/dev/zero"])
            if config["landlock"] == "required" and applied == "unavailable":
                raise OSError("Landlock was required but this kernel does not offer it")
        status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
        hello = {"seq": 0, "kind": "hello", "sandbox": applied, "network": network, "uid": os.getuid(),
                 "pid": os.getpid(), "capabilities": status.get("CapEff", "?").strip()}
    except BaseException as exc:
        hello = {"seq": 0, "kind": "raised", "type": type(exc).__name__, "message": str(exc)[:2000],
                 "traceback": traceback.format_exc()[-3000:]}
        wire.send(reply_fd, wire.dump(hello))
        os._exit(1)
    worker = Worker(request_fd, reply_fd)
    worker.reply(hello)
    worker.serve()
    sys.stdout.flush()
    os._exit(0)


def zygote(sock_fd: int) -> int:
    """Serve the grader: for each request (a config and three file descriptors), fork a worker."""
    import socket
    from llmcourse.course.grading import sandbox
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
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                child(json.loads(message), list(fds))
            finally:
                os._exit(1)
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
