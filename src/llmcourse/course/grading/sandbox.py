"""What keeps a student's code in its box: limits, a separate user, Landlock, a hard kill, hashes.

Layers, each on its own enough for some attacks and together enough for the ones we test:

1. A process of its own, in a session (and process group) of its own, with resource limits set in
   the child before it runs anything: address space (memory), CPU seconds, file size, core dumps.
2. As root (CI), the worker drops to the user and group `nobody` (65534) with no supplementary
   groups; its scratch folder is the only folder it owns, so it cannot write to the course, the
   submissions or the results. Where user nobody cannot run this Python (it is installed under
   /root, say), the worker stays uid 0 but without any capability (and so cannot load kernel
   modules, mount, or read and write other users' files); Landlock then keeps it in its folder.
   As root, the worker also enters a network namespace of its own: no TCP, UDP or raw socket
   reaches anything.
3. Where the kernel has Landlock (Linux 5.13+; no privileges needed), the worker restricts itself
   before it runs student code: it may read only the Python installation and the course package,
   write only in its scratch folder, open no TCP connection, and (Landlock ABI 6+, Linux 6.12)
   send no signal to a process outside its sandbox. It cannot read `solutions/` (hidden tests).
4. At the end, SIGKILL to the whole process group, then a sweep of /proc for anything that left
   the group (its own session), and for anything that escaped by double-forking (the workers'
   parent, the zygote, is a child subreaper: orphans become its children).
5. The grader hashes the protected folders (solutions, results, submissions, the llmcourse package)
   before and after each submission and reports any change as tampering.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Limits:
    """Limits for one submission (seconds, bytes)."""
    cell_s: float = 30.0          # one notebook cell, or one call of a student's function by a check
    total_s: float = 300.0        # everything a submission runs, restarts included
    memory_bytes: int = 4 * 2**30  # address space of the worker (RLIMIT_AS); torch alone maps ~0.7 GB
    file_bytes: int = 64 * 2**20   # the largest file the worker may write (RLIMIT_FSIZE)
    processes: int = 256          # RLIMIT_NPROC when the worker runs as its own user (threads count)


# --- in the child, between fork and exec ------------------------------------------------------------

def child_limits(limits: Limits, identity: str):
    """A preexec_fn: resource limits for the worker (runs in the forked child, before exec).

    identity: "nobody" (root drops to user nobody: Popen's user/group do that), "no-capabilities"
    (root keeps uid 0 but loses every capability, for good: the bounding set is emptied before
    exec, so the new program gets none) or "self" (not root: nothing to drop).
    """
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        cpu = int(limits.total_s) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if identity == "nobody":  # counts every process of the user; only meaningful for a user of its own
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        if identity == "no-capabilities":
            drop_capabilities()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG, no kill
    return apply


def drop_capabilities() -> None:
    """Empty this process's capability bounding, ambient, effective and permitted sets (needs root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:  # PR_CAPBSET_DROP; EINVAL: no such cap
            break
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all empty
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def isolate_network() -> str:
    """Move this process into a network namespace of its own, if it is root (the worker calls this
    before it drops its capabilities, and before any student code). The namespace's only interface
    is a loopback that is down, so no socket of any kind, TCP, UDP or raw, reaches anything on this
    machine or beyond. Returns what was done, for the report."""
    if os.geteuid() != 0:
        return "network not isolated (not root)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"network not isolated ({os.strerror(ctypes.get_errno())})"
    return "no network"


_identity_cache: dict[str, str] = {}


def worker_identity() -> str:
    """Who the worker runs as: "self" when not root; as root "nobody" if user nobody can start this
    Python and import the course (not so when Python lives in /root), else "no-capabilities"."""
    if os.geteuid() != 0:
        return "self"
    if "identity" not in _identity_cache:
        import subprocess
        import llmcourse
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
               "PYTHONPATH": str(Path(llmcourse.__file__).resolve().parent.parent), "PYTHONNOUSERSITE": "1"}
        try:
            probe = subprocess.run([sys.executable, "-c", "import numpy, llmcourse"], cwd="/", env=env,
                                   user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, timeout=120)
            ok = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _identity_cache["identity"] = "nobody" if ok else "no-capabilities"
    return _identity_cache["identity"]


# --- Landlock (called by the worker itself, before any student code) ----------------------------------

_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
READ_RIGHTS = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # the rights a rule on a file may hold


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 where there is none (not Linux, too old, disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _syscall().syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except Exception:
        return 0
    return max(0, int(version))


def landlock(read_paths: list[str], write_paths: list[str]) -> str:
    """Restrict this process (and its future children) for good; return what was applied, in words.

    read_paths: folders and files it may read and execute; write_paths: where it may also write.
    Everything else on the file system is out of reach, TCP is closed (ABI 4+) and signals to
    processes outside the sandbox are refused (ABI 6+). Raises OSError if the kernel refuses.
    """
    abi = landlock_abi()
    if abi < 1:
        return "unavailable"
    libc = _syscall()
    fs_all = _FS_RIGHTS[min(abi, 5)]
    attr = _RulesetAttr(fs_all, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        def allow(path: str, rights: int) -> None:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return  # a folder that does not exist needs no rule
            try:
                if not os.path.isdir(path):
                    rights &= FILE_RIGHTS
                rule = _PathBeneath(rights & fs_all, fd)
                if libc.syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(fd)

        for path in read_paths:
            allow(path, READ_RIGHTS)
        for path in write_paths:
            allow(path, fs_all)
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    parts = ["file system"] + (["TCP"] if abi >= 4 else []) + (["signals"] if abi >= 6 else [])
    return f"landlock ABI {abi} ({', '.join(parts)})"


# --- the end of a worker: kill everything it started ---------------------------------------------------

def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (so escaped grandchildren can be found and killed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def _processes() -> list[tuple[int, int, int, int, str]]:
    """(pid, ppid, pgid, sid, state) of every process we can see."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        found.append((int(entry), int(fields[1]), int(fields[2]), int(fields[3]), fields[0]))
    return found


def kill_everything(leader: int, adopter: int | None = None) -> int:
    """SIGKILL the worker's process group and session, and every process `adopter` has adopted.

    `leader` is the worker's pid (its own session and group id); `adopter` is the zygote, a child
    subreaper that inherits what escapes the session by double-forking. Returns how many processes
    besides the worker were killed (a student's code started them; the report says so).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)
    for _ in range(200):  # until the worker has exited (its orphans are adopted at that moment)
        if not any(pid == leader and state not in "ZX" for pid, _, _, _, state in _processes()):
            break
        time.sleep(0.01)
    me, stray = os.getpid(), set()
    for _ in range(100):
        found = [pid for pid, ppid, pgid, sid, state in _processes()
                 if pid != me and state not in "ZX"
                 and (sid == leader or pgid == leader or pid == leader or (adopter and ppid == adopter))]
        if not found:
            break
        for pid in found:
            stray.add(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    stray.discard(leader)
    return len(stray)


# --- did anything change? ------------------------------------------------------------------------------

def tree_hash(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path` (or of the file itself); symlinks by target."""
    path = Path(path)
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            full = Path(root) / name
            key = str(full.relative_to(path))
            if full.is_symlink():
                out[key] = "symlink -> " + os.readlink(full)
            elif full.is_file():
                out[key] = hashlib.sha256(full.read_bytes()).hexdigest()
        for name in dirs:
            out[str((Path(root) / name).relative_to(path)) + "/"] = "dir"
    return out


def describe_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What differs between two tree_hash results, one phrase per file."""
    changes = [f"{p} was created" for p in sorted(after.keys() - before.keys())]
    changes += [f"{p} was deleted" for p in sorted(before.keys() - after.keys())]
    changes += [f"{p} was modified" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return changes
