"""Responders, the parent's side: start the lab's responder process, find it, stop it.

The process itself (the servers, and what they answer) is
netlab/probes/responder_server.py; this module starts it detached
(start_new_session, in /), so it outlives the `netlab up` that started it, hands it the
spec on stdin (a memfd, so writing it can never block on a child that stalls) and waits
on a private pipe until it reports "every socket is bound" or the first bind error. The
process is stopped by PID (`stop_responders`), found again by its exact argv
(`responders_of`) when the state that lists the PID is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from netlab import processes
from netlab.deadline import Deadline
from netlab.probes.responder_server import EXIT_WORDS, MODULE, Service, describe, validate

# The module name responders of labs built by earlier versions run under: still theirs to stop.
MODULES = (MODULE, "netlab.probes.responders")
READY_TIMEOUT = 10.0  # seconds on a normal machine (× slowness: netlab/deadline.py)


class ResponderError(Exception):
    """Responders could not start. `service` is the one that failed (None if the process
    itself failed), `errno` the kernel's error number if there was one, and `pid` the
    child's PID (already gone when this is raised)."""

    def __init__(
        self, message: str, *, service: Service | None = None, err: int | None = None, pid: int | None = None
    ) -> None:
        super().__init__(message)
        self.service = service
        self.errno = err
        self.pid = pid


_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def start_responders(
    services: Sequence[Service],
    *,
    log_path: str | None = None,
    ready_timeout: float = READY_TIMEOUT,
    lab: str | None = None,
) -> int:
    """Start one detached process serving every service; return its PID once every
    socket is bound. Raises ResponderError (and leaves no process behind) otherwise.

    `lab` is written into the process's argv (`--lab LAB`), so `down` finds the lab's
    responders by their exact argv even when the state file that lists the PID is lost.
    `ready_timeout` is for a normal machine; it is scaled by the machine's slowness."""
    services = list(services)
    if not services:
        raise ValueError("no services to serve")
    validate(services)
    spec = json.dumps({"services": [asdict(s) for s in services]}).encode()

    proc, ready_r = _spawn(spec, log_path, lab)
    deadline = Deadline(
        ready_timeout, f"the responder process (PID {proc.pid}) to bind {len(services)} sockets and report ready"
    )
    try:
        msg = _read_ready(ready_r, deadline)
    except BaseException:
        _kill_and_reap(proc)
        raise
    finally:
        os.close(ready_r)

    if msg is None:
        _kill_and_reap(proc)
        raise ResponderError(
            f"responders did not report ready: {deadline.message()}" + _log_hint(log_path), pid=proc.pid
        )
    if msg.get("ok") is True:
        with _children_lock:
            _children[proc.pid] = proc
        return proc.pid

    code = _kill_and_reap(proc)
    if "service" in msg:
        svc = Service(**msg["service"])
        err = msg.get("errno")
        raise ResponderError(
            f"cannot serve {describe(svc)}: {msg.get('error', 'failed')}", service=svc, err=err, pid=proc.pid
        )
    what = msg.get("error") or f"responder process exited (code {code}) before it was ready"
    raise ResponderError(what + _log_hint(log_path), pid=proc.pid)


def _spawn(spec: bytes, log_path: str | None, lab: str | None) -> tuple[subprocess.Popen[bytes], int]:
    """The responder process, detached, with the spec on its stdin; and the read end of
    the pipe it reports readiness on."""
    spec_fd = os.memfd_create("netlab-responders-spec", os.MFD_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child, closed below
    # The child must find this netlab even when it is run from a checkout that is not
    # installed; it runs in / so it never keeps a mount or directory busy.
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        os.write(spec_fd, spec)
        os.lseek(spec_fd, 0, os.SEEK_SET)
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--ready-fd", str(ready_w), *(["--lab", lab] if lab else [])],
            stdin=spec_fd,
            stdout=log or subprocess.DEVNULL,
            stderr=log or subprocess.DEVNULL,
            pass_fds=(ready_w,),
            start_new_session=True,
            cwd="/",
            env=env,
        )
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(spec_fd)
        os.close(ready_w)
        if log is not None:
            log.close()
    return proc, ready_r


def _read_ready(fd: int, deadline: Deadline) -> dict[str, Any] | None:
    """The child's one-line report; {} if it died without one, None when the deadline passed."""
    buf = b""
    poller = select.poll()  # not select(): the caller may hold more than 1024 descriptors
    poller.register(fd, select.POLLIN)
    while b"\n" not in buf:
        left = deadline.left()
        if left <= 0:
            return None
        if not poller.poll(max(1, int(left * 1000))):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:  # every copy of the write end is closed: the child is gone
            break
        buf += chunk
    line = buf.split(b"\n", 1)[0]
    if not line:
        return {}
    try:
        obj = json.loads(line)
    except ValueError:
        return {"error": f"responder sent a garbled readiness report: {line[:200]!r}"}
    return obj if isinstance(obj, dict) else {}


def _log_hint(log_path: str | None) -> str:
    if not log_path:
        return " (pass log_path to see its output)"
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 800))
            tail = f.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return f"; last lines of {log_path}:\n{tail}" if tail else ""


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take 5 s
        return None


def _is_responder(pid: int) -> bool:
    argv = processes.argv(pid)
    return len(argv) > 2 and argv[1] == b"-m" and argv[2].decode(errors="replace") in MODULES


def responders_of(lab: str) -> list[int]:
    """PIDs of the responder processes started for `lab` (matched on their exact argv:
    `python -m netlab.probes.responder_server --ready-fd N --lab LAB`)."""
    found = []
    for pid in processes.all_pids():
        argv = processes.argv(pid)
        tagged = len(argv) >= 7 and _is_responder(pid) and argv[5:7] == [b"--lab", lab.encode()]
        if tagged and processes.alive(pid):
            found.append(pid)
    return found


def is_running(pid: int) -> bool:
    """True if pid is a live (not zombie) responder process."""
    return processes.alive(pid) and _is_responder(pid)


def stop_responders(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM the responder process, SIGKILL it after `timeout` s if needed. Fine if it is
    already gone. A PID that now belongs to some other program is left alone: PIDs are
    reused, and this must never kill what it did not start."""
    with _children_lock:
        proc = _children.pop(pid, None)
    if proc is not None:
        if proc.poll() is not None:  # already exited (and now reaped)
            return
        # An unreaped child of ours cannot have had its PID reused: signal it directly.
        processes.end([pid], timeout, own={pid: proc})
    elif is_running(pid):
        processes.end([pid], timeout)


@dataclass(frozen=True)
class ResponderHealth:
    pid: int
    running: bool
    exit: str | None  # how it ended, from its log ("exit status 0: stopped by SIGTERM"); None if unknown

    def __str__(self) -> str:
        if self.running:
            return f"PID {self.pid} running"
        how = self.exit or "exit status unknown: it left no word (killed by SIGKILL, or crashed hard)"
        return f"PID {self.pid} dead ({how})"


def health(pids: Sequence[int], log_path: str | None) -> list[ResponderHealth]:
    """Each of the lab's responder processes: running, or dead and how it ended if its log says."""
    out = []
    for pid in pids:
        running = is_running(pid)
        out.append(ResponderHealth(pid, running, None if running else _last_words(pid, log_path)))
    return out


def _last_words(pid: int, log_path: str | None) -> str | None:
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    tag = f"responders[{pid}]: {EXIT_WORDS} "
    words = [line.split(f"responders[{pid}]: ", 1)[1] for line in lines if tag in line]
    return words[-1] if words else None
