"""The student's process for one submission, seen from the grader: the zygote that forks it, the
session that starts it, sends it cells and calls, enforces the time limits and restarts it.

The zygote (`Launcher`) imports torch and the course once per batch; each submission's worker is
forked from it and enters its sandbox before it runs anything of the student's (see `worker`,
`sandbox`). A `Session` speaks to one worker over two pipes (see `wire`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llmcourse
from llmcourse.course.grading import sandbox, wire
from llmcourse.course.grading.errors import CellTimeout, GradingError, TotalTimeout, WorkerLost, quote, text
from llmcourse.course.grading.sandbox import Limits

MAX_RESTARTS = 6
STARTUP_S = 60.0  # starting Python and importing torch; counts towards the total, not towards a cell
INTERRUPT_GRACE_S = 1.0  # after SIGINT, how long a cell may take to stop before the group is killed


def _package_root() -> str:
    return str(Path(llmcourse.__file__).resolve().parent.parent)


class Launcher:
    """The zygote: a process that imports torch and the course once and forks a worker per submission.

    Forking a warm process takes milliseconds where starting Python and importing torch takes
    seconds (much more on a busy machine); every restart after an endless loop or a crash needs one.
    The zygote never runs student code; each forked worker enters its sandbox before it does.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.home: Path | None = None

    def _start(self) -> None:
        self.close()
        self.home = Path(tempfile.mkdtemp(prefix="llmcourse-zygote-"))
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "TMPDIR": str(self.home),
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(self.home / "matplotlib"), "LLMCOURSE_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONNOUSERSITE": "1", "PYTHONPATH": _package_root(), "PYTHONIOENCODING": "utf-8",
               "LANG": "C.UTF-8", "LLMCOURSE_GRADING": "1"}
        errors = open(self.home / "zygote.log", "w+b")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llmcourse.course.grading.worker", "--zygote", str(child.fileno())],
                cwd=self.home, env=env, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                pass_fds=(child.fileno(),), start_new_session=True)
        finally:
            child.close()
        self.sock = parent
        parent.settimeout(STARTUP_S * 3)
        try:
            ready = parent.recv(16)
        except OSError:
            ready = b""
        if ready != b"ready":
            errors.seek(0)
            text = errors.read()[-3000:].decode(errors="replace")
            self.close()
            raise RuntimeError(f"the grading worker could not start:\n{text}")
        errors.close()

    def spawn(self, config: dict, fds: list[int]) -> int:
        """Fork a worker with `config` and the three descriptors (requests, replies, log); its pid."""
        for attempt in (1, 2):
            if self.process is None or self.process.poll() is not None:
                self._start()
            try:
                socket.send_fds(self.sock, [json.dumps(config).encode()], fds)
                reply = json.loads(self.sock.recv(4096) or b"null")
                if isinstance(reply, dict) and isinstance(reply.get("pid"), int):
                    return reply["pid"]
            except (OSError, ValueError):
                pass
            self.close()  # the zygote is gone (killed?): start a new one, once
        raise RuntimeError("the grading worker's zygote failed twice")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


class Session:
    """The worker for one submission: starts it, runs cells, forwards calls, restarts it if it dies.

    Only the time spent waiting for the worker counts towards the submission's total time limit;
    the grader's own work on its answers (decoding them, the checks) is accounted apart.
    """

    def __init__(self, launcher: Launcher, scratch: Path, limits: Limits, log, landlock: str | bool = True,
                 hide: list[str] | None = None, unconfined: bool = False) -> None:
        self.launcher, self.scratch, self.limits, self.log = launcher, scratch, limits, log
        self.landlock, self.hide, self.unconfined = landlock, [str(p) for p in hide or []], unconfined
        self.identity = sandbox.worker_identity()
        self.used = 0.0      # seconds spent waiting for the worker: the student's time
        self.dropped = 0     # bytes of the notebook's output beyond Limits.output_bytes
        self.pid: int | None = None
        self.executed: list[tuple[int, str]] = []
        self.problems: list[str] = []
        self.restarts, self.seq, self.stray = 0, 0, 0
        self.sandbox, self.unsafe = "not started", ""
        self.request_fd = self.reply_fd = -1

    def give_scratch(self) -> None:
        """Make the worker's user own everything in its scratch folder (it may write only there)."""
        owner = sandbox.NOBODY if self.identity == "nobody" else os.geteuid()
        for root, dirs, files in os.walk(self.scratch):
            for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                os.lchown(name, owner, owner)

    def time_left(self) -> float:
        """Seconds of the submission's total time limit still unused."""
        return self.limits.total_s - self.used

    # --- life and death ------------------------------------------------------------------------
    def _config(self) -> dict:
        home = self.scratch / "home"
        env = {"HOME": str(home), "TMPDIR": str(home), "MPLCONFIGDIR": str(home / ".matplotlib")}
        cwd = self.scratch / "submission"  # the notebook's own folder (a copy), as if the student ran it
        return {"scratch": str(self.scratch), "cwd": str(cwd) if cwd.is_dir() else None,
                "landlock": self.landlock, "identity": self.identity, "hide": self.hide,
                "limits": dataclasses.asdict(self.limits), "env": env}

    def _start(self) -> None:
        if self.restarts > MAX_RESTARTS:
            raise WorkerLost(f"the notebook's process was restarted {MAX_RESTARTS} times; grading stopped")
        if self.time_left() <= 0:
            raise TotalTimeout(f"the submission used up its total time limit of {self.limits.total_s:g} s")
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self.pid = self.launcher.spawn(self._config(), [req_r, rep_w, self.log.fileno()])
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.request_fd, self.reply_fd = req_w, rep_r
        self.restarts += 1
        try:
            hello = self._receive(time.monotonic() + min(self.time_left(), STARTUP_S))
        except (TimeoutError, EOFError, wire.WireError) as exc:
            self.kill()
            raise WorkerLost(f"the notebook's process did not start ({type(exc).__name__}: {exc})") from None
        if hello.get("kind") != "hello":
            self.kill()
            raise RuntimeError(f"the grading worker could not start: {text(hello.get('type'))}: "
                               f"{text(hello.get('message'))}")
        self._check_confinement(hello)

    def _check_confinement(self, hello: dict) -> None:
        """Describe the sandbox for the report; refuse an unconfined worker unless the instructor allowed it."""
        caps = text(hello.get("capabilities"), 40)
        who = {"nobody": "user nobody", "self": "the grader's user",
               "no-capabilities": "uid 0 without capabilities" if set(caps) == {"0"} else f"uid 0, capabilities {caps}"}
        parts = [who[self.identity], text(hello.get("sandbox"), 200), text(hello.get("network"), 80)]
        parts += [p for p in ("own PID namespace" if hello.get("pid_namespace") is True else "",
                              text(hello.get("files"), 200) if hello.get("files") else "") if p]
        self.sandbox = ", ".join(parts)
        if hello.get("confined") is True:
            return
        why = text(hello.get("why"), 300) if self.identity != "no-capabilities" else "the worker runs as uid 0"
        if not self.unconfined:
            self.kill()
            raise sandbox.ConfinementError(why)
        self.unsafe = f"graded with an unconfined worker ({why}), as the instructor allowed"
        if hello.get("python_readable") is False:  # user nobody cannot run this Python at all
            self.kill()
            self.identity, self.restarts = "no-capabilities", self.restarts - 1
            self.give_scratch()
            self._start()

    def kill(self) -> None:
        if self.pid is not None:
            self.stray += sandbox.kill_everything(self.pid, adopter=self.launcher.pid)
            self.pid = None
        for fd in (self.request_fd, self.reply_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.request_fd = self.reply_fd = -1

    def _ensure(self) -> None:
        if self.pid is not None:
            return
        self._start()
        replay, self.executed = self.executed, []
        for index, source in replay:
            self.run_cell(index, source, replaying=True)

    # --- messages ------------------------------------------------------------------------------
    def _send(self, payload: bytes, deadline: float) -> None:
        start = time.monotonic()
        try:
            wire.send(self.request_fd, payload, deadline)
        finally:
            self.used += time.monotonic() - start

    def _receive(self, deadline: float) -> dict:
        start = time.monotonic()
        try:
            payload = wire.recv(self.reply_fd, deadline)
        finally:
            self.used += time.monotonic() - start
        message = wire.decode(payload)  # the grader's own work: not the student's time
        if not isinstance(message, dict):
            raise wire.WireError("the worker's answer is not a dict")
        if isinstance(message.get("dropped"), int):
            self.dropped = max(self.dropped, message["dropped"])
        return message

    def request(self, request: tuple, what: str) -> dict:
        """Send one request; wait at most one cell's time limit (and never past the total)."""
        self._ensure()
        self.seq += 1
        request = (request[0], self.seq, *request[1:])
        deadline = time.monotonic() + max(0.0, min(self.limits.cell_s, self.time_left()))
        try:
            self._send(pickle.dumps(request), deadline)
            while True:
                answer = self._receive(deadline)
                if answer.get("seq") == self.seq:
                    return answer
        except TimeoutError:
            pass
        except wire.WireError as exc:
            self.kill()
            raise WorkerLost(f"the notebook's process sent an answer the grader does not accept while running "
                             f"{what} ({exc}); the process was stopped") from None
        except (EOFError, OSError) as exc:
            self.kill()
            raise WorkerLost(f"the notebook's process ended while running {what} ({exc}): os._exit, a crash, "
                             f"or the memory limit of {self.limits.memory_bytes / 2**30:g} GiB") from None
        self._stop_overtime(what)

    def _stop_overtime(self, what: str) -> None:
        """Over time: interrupt (KeyboardInterrupt in the student's code); if that fails, kill the worker."""
        total = self.time_left() <= 0
        if not total:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGINT)
            try:
                grace = time.monotonic() + INTERRUPT_GRACE_S
                while True:
                    answer = self._receive(grace)
                    if answer.get("seq") == self.seq:
                        raise CellTimeout(f"{what} ran longer than the limit of {self.limits.cell_s:g} s "
                                          "and was stopped (an endless loop?)")
            except (TimeoutError, EOFError, OSError, wire.WireError):
                pass
        self.kill()
        if total:
            raise TotalTimeout(f"{what} was stopped: the submission used up its total time limit "
                               f"of {self.limits.total_s:g} s")
        raise CellTimeout(f"{what} ran longer than the limit of {self.limits.cell_s:g} s and did not stop "
                          "when interrupted; its process was killed (an endless loop that ignores Ctrl-C?)")

    # --- what the grader asks for ----------------------------------------------------------------
    def run_cell(self, index: int, source: str, replaying: bool = False) -> bool:
        """Run one of the student's cells in the worker; record a failure as a problem of the notebook."""
        what = f"cell {index}"
        try:
            answer = self.request(("exec", index, source), what)
        except GradingError as exc:
            self.problems.append(f"{what}{' (run again after a restart)' if replaying else ''}: {exc}")
            return False
        if answer.get("kind") == "done":
            self.executed.append((index, source))
            return True
        if not replaying:
            self.problems.append(f"cell {index} raised {text(answer.get('type'), 80)}: "
                                 f"{quote(text(answer.get('message')))}")
        return False

    def describe(self, name: str) -> dict:
        return self.request(("describe", name), f"looking up {name!r}")
