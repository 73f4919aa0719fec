"""What keeps a student's code in its box: limits, a separate user, namespaces, Landlock, a hard kill, hashes.

Layers, each on its own enough for some attacks and together enough for the ones we test:

1. A process of its own, in a session (and process group) of its own, with resource limits set in
   the child before it runs anything: address space (memory), CPU seconds, file size, core dumps.
2. As root, the worker always runs as the user and group `nobody` (65534) with no supplementary
   groups, in namespaces of its own: a PID namespace (when it ends, the kernel kills every process
   it started, whatever they did), a network namespace (no TCP, UDP or raw socket reaches
   anything) and a mount namespace in which the folders the grader names (solutions, results,
   submissions) are empty, and Python and its packages are visible to `nobody` even where they
   live in a folder only root may enter (Python installed under /root): a tmpfs over that folder
   shows only what the worker needs. If that cannot be done, the grader refuses to grade unless
   the instructor allows an unconfined worker (`--unsafe-unconfined`), which every report records.
3. Where the kernel has Landlock (Linux 5.13+; no privileges needed), the worker restricts itself
   before it runs student code: it may read only the Python installation and the course package,
   write only in its scratch folder, open no TCP connection, and (Landlock ABI 6+, Linux 6.12)
   send no signal to a process outside its sandbox. It cannot read `solutions/` (hidden tests).
   Not root: Landlock is the confinement; without it the grader refuses unless allowed as above.
4. At the end, SIGKILL to the worker: in its own PID namespace that ends everything in it. Without
   one (not root), every process of its session or group, and every descendant (the workers'
   parent, the zygote, is a child subreaper: orphans become its children), is stopped first, so
   none can fork again, then killed, in a loop that ends only when none is left.
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
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18
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
    grader_s: float = 120.0       # CPU seconds the grader itself may spend on one submission's answers
    output_bytes: int = 16 * 2**20  # what the worker's prints may fill; the rest is dropped and counted


class ConfinementError(Exception):
    """The worker could not be confined on this machine, and the instructor did not allow that."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the student's code cannot be confined on this machine: {why}. Grade as root, or on "
                         "Linux with Landlock, or pass --unsafe-unconfined (grade_submission: unconfined=True) "
                         "to grade anyway; every report and grades.csv then say so")


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


def worker_identity() -> str:
    """Who the worker runs as: "self" when the grader is not root, else "nobody". (A third identity,
    "no-capabilities", uid 0 without any capability, is used only where user nobody cannot run this
    Python at all and the instructor allowed an unconfined worker.)"""
    return "nobody" if os.geteuid() == 0 else "self"


def unconfinable(landlock: str | bool) -> str:
    """Why the worker cannot be confined here, known before any worker starts ("" if it may be):
    not root, and no Landlock. (As root, the worker itself finds out whether namespaces work.)"""
    if os.geteuid() != 0 and (not landlock or landlock_abi() == 0):
        return "not root, and no Landlock: the code would run as the grader's own user"
    return ""


# --- namespaces (called by the zygote and the worker as root, before any student code) ----------------

def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def unshare(flags: int) -> None:
    """unshare(2): OSError if the kernel refuses."""
    if _libc().unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), f"unshare({flags:#x}) failed")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2): OSError naming the target if the kernel refuses."""
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    if _libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount on {target} failed: {os.strerror(errno)}")


def nobody_can_enter(path: str) -> bool:
    """Whether user nobody (no groups) may search the folder `path`, by its permission bits."""
    info = os.stat(path)
    if info.st_uid == NOBODY:
        return bool(info.st_mode & 0o100)
    if info.st_gid == NOBODY:
        return bool(info.st_mode & 0o010)
    return bool(info.st_mode & 0o001)


def _first_closed_folder(path: str) -> tuple[str, str] | None:
    """(folder, child) for the outermost folder on `path` that nobody may not enter, and the next
    component below it; None if nobody may reach `path`."""
    parts = Path(path).parts
    for depth in range(1, len(parts)):
        folder = str(Path(*parts[:depth]))
        if not nobody_can_enter(folder):
            return folder, parts[depth]
    return None


def open_to_nobody(paths: list[str]) -> list[str]:
    """In a mount namespace of our own (as root): make each path reachable by user nobody. Each
    folder on the way that nobody may not enter (/root, say) is covered by a tmpfs that holds only
    the entries on the way (bind mounts of the real ones); everything else in it disappears.
    Returns the folders so covered."""
    covered = []
    for _ in range(20):  # one closed folder a round; a covered folder may have a closed one below it
        closed: dict[str, set[str]] = {}
        for path in paths:
            found = _first_closed_folder(path) if os.path.exists(path) else None
            if found:
                closed.setdefault(found[0], set()).add(found[1])
        if not closed:
            return covered
        folder = min(closed, key=lambda f: len(Path(f).parts))
        entries = {name: os.open(os.path.join(folder, name), os.O_PATH | os.O_CLOEXEC) for name in closed[folder]}
        try:
            mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            for name, fd in entries.items():
                target = os.path.join(folder, name)
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(target)
                else:
                    open(target, "w").close()
                mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        finally:
            for fd in entries.values():
                os.close(fd)
        covered.append(folder)
    raise OSError(f"could not open a way for user nobody to {', '.join(paths)}")


def hide(paths: list[str], keep: list[str]) -> list[str]:
    """In a mount namespace of our own: cover each folder with an empty read-only tmpfs (each file with
    /dev/null), except one that holds a path in `keep`. Returns what was hidden."""
    hidden = []
    for path in paths:
        path = os.path.realpath(path)
        if not os.path.exists(path) or any(k == path or k.startswith(path.rstrip("/") + "/") for k in keep):
            continue
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0555,size=4k")
        else:
            mount("/dev/null", path, None, MS_BIND)
        hidden.append(path)
    return hidden


def _outermost(paths: list[str]) -> list[str]:
    """The paths that do not lie inside another of them: '/a' covers '/a/b'."""
    ordered = sorted({os.path.realpath(p) for p in paths})
    kept: list[str] = []
    for path in ordered:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def private_temp(keep: list[str], folders: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")) -> list[str]:
    """In a mount namespace of our own: a fresh, small tmpfs on each shared temporary folder, so nothing
    one submission leaves there reaches the next. A path in `keep` that lies in one (the scratch
    folder; the course's own checkout and virtual environment when they live in /tmp) is bound back
    into the new tmpfs, with what is mounted below it."""
    kept = [path for path in _outermost(keep) if os.path.exists(path)]
    fds = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in kept}
    made = []
    try:
        for folder in folders:
            if not os.path.isdir(folder) or os.path.islink(folder):
                continue
            inside = [path for path in kept if path.startswith(folder.rstrip("/") + "/")]
            mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m")
            made.append(folder)
            for path in inside:
                if os.path.isdir(f"/proc/self/fd/{fds[path]}"):
                    os.makedirs(path)
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    open(path, "w").close()
                mount(f"/proc/self/fd/{fds[path]}", path, None, MS_BIND | MS_REC)
    finally:
        for fd in fds.values():
            os.close(fd)
    return made


def confine_files(readable: list[str], hidden: list[str], scratch: str) -> str:
    """As root, before dropping to nobody: a mount namespace where `hidden` folders are empty, the
    temporary folders are its own, and the `readable` paths are reachable by nobody. Returns what
    was done, for the report; OSError if the kernel refuses (no CAP_SYS_ADMIN in a container, say)."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    covered = open_to_nobody(readable)
    gone = hide(hidden, keep=[os.path.realpath(p) for p in [scratch, *readable]])
    private_temp([scratch, *readable])
    return (f"{len(gone)} folder(s) hidden, own /tmp" + (f", {', '.join(covered)} covered" if covered else ""))


def isolate_network() -> str:
    """Move this process into a network namespace of its own, if it is root (the worker calls this
    before it drops its capabilities, and before any student code). The namespace's only interface
    is a loopback that is down, so no socket of any kind, TCP, UDP or raw, reaches anything on this
    machine or beyond. Returns what was done, for the report."""
    if os.geteuid() != 0:
        return "network not isolated (not root)"
    try:
        unshare(CLONE_NEWNET)
    except OSError as exc:
        return f"network not isolated ({os.strerror(exc.errno)})"
    return "no network"


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


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    return any(p == pid and state not in "ZX" for p, _, _, _, state in _processes())


def _wait_until_dead(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.01)
    return False


def kill_everything(leader: int, adopter: int | None = None, seconds: float = 30.0) -> int:
    """SIGKILL the worker and every process it started; return how many besides the worker there were.

    `leader` is the worker's pid (its own session and group id); `adopter` is the zygote, a child
    subreaper that inherits what escapes the session by double-forking. Where the worker is the
    first process of a PID namespace of its own, the kernel kills the rest of the namespace when it
    dies. Otherwise every process of its session or group and every descendant is stopped (so none
    can fork again), then all are killed, until none is left.
    """
    namespace = _pid_namespace(leader)
    if namespace is not None and namespace != _pid_namespace(os.getpid()):
        members = [pid for pid, *_ , state in _processes() if pid != leader and state not in "ZX"
                   and _pid_namespace(pid) == namespace]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(leader, signal.SIGKILL)
        if _wait_until_dead(leader, seconds):  # the namespace's first process dies after all the others
            return len(members)
    stopped = _stop_descendants(leader, adopter)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = _theirs(leader, adopter, stopped)
        if not found:
            break
        stopped.update(found)
        _signal(found, signal.SIGKILL)
        time.sleep(0.01)
    stopped.discard(leader)
    return len(stopped)


def _theirs(leader: int, adopter: int | None, known: set[int]) -> list[int]:
    """Live processes of the worker's session or group, adopted by the zygote, or in or under `known`."""
    me = os.getpid()
    return [pid for pid, ppid, pgid, sid, state in _processes()
            if pid != me and state not in "ZX" and (pid == leader or sid == leader or pgid == leader
                                                     or pid in known or ppid in known
                                                     or (adopter is not None and ppid == adopter))]


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _stop_descendants(leader: int, adopter: int | None) -> set[int]:
    """SIGSTOP the worker's session, group and descendants, until a round finds no new one (a stopped
    process cannot fork, so this ends)."""
    stopped: set[int] = set()
    for _ in range(10_000):
        new = [pid for pid in _theirs(leader, adopter, stopped) if pid not in stopped]
        if not new:
            break
        stopped.update(new)
        _signal(new, signal.SIGSTOP)
    return stopped


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
