"""`netlab serve`: a resident process that runs netlab's commands with the pipeline
already imported (the client's half, which every `netlab` command tries first, is
netlab.client).

Why: a command that loads a lab pays ~0.24 s of CPU before it reads the file's first
byte — the interpreter, pydantic and the lab's models (bench/README.md, "The fixed cost
before the lab is read") — which no fresh Python process can avoid; a 500-pod
reconcile's whole work after that is ~0.15 s. The server imports all of it once; each
command is then a child forked from it (a few milliseconds), as mypy's dmypy and
Gradle's daemon keep theirs warm.

How: the server listens on STATE_DIR/.server.sock (a directory only root reads; the
socket itself 0600). A command in SERVED run as root connects and sends what makes it
that command: its arguments, environment, umask, open-file limit, the namespaces it
runs in and the identity of the code it would run (netlab.codeid.code_id). The
server answers "ready" only to a client of its own user, running the same code in the
same namespaces; the client then passes its stdin, stdout, stderr and working directory
(SCM_RIGHTS), and the server forks. The child takes the client's descriptors, directory,
environment and limits, sends its pid, runs the command as the client would have, and
sends its exit code. Meanwhile the client forwards SIGINT, SIGTERM and SIGHUP to it
(Ctrl-C reaches the client: the child is in a session of its own), then exits with the
child's code. Anything else — no server, another user, other code, other namespaces (a
private mount namespace's own /run/netns), a message too large, a server that does not
answer in time — and the client runs the command itself: the server only ever saves time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from netlab.client import MAX_REQUEST, SERVED, cgroup, namespaces, socket_path
from netlab.codeid import code_id
from netlab.naming import state_dir

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def lock_path() -> str:
    return os.path.join(state_dir(), ".server.lock")


# ---- the server's half -------------------------------------------------------------


class ServerRunning(Exception):
    """Another server holds the lock of this state directory."""


@dataclass
class Server:
    """The listening socket and the children running commands."""

    run: Callable[[list[str], str], int]  # runs a command (argv, program name) in a child: its exit code
    log: TextIO
    idle: float = 0.0  # seconds without commands after which it ends (0: never)
    children: dict[int, tuple[float, list[str]]] = field(default_factory=dict)
    code: str = ""  # netlab.codeid.code_id as the server started
    seen: dict[str, Any] = field(default_factory=dict)  # its namespaces and capabilities
    own_fds: list[int] = field(default_factory=list)  # what a child closes first

    def serve(self) -> None:
        """Until SIGINT, SIGTERM, an idle timeout or netlab's code changed under it."""
        self.code, self.seen = _code_now(), namespaces()
        with self._listening() as listener, self._woken_by_children() as woken:
            self._say(f"pid {os.getpid()}, listening on {socket_path()}")
            last = time.monotonic()
            while True:
                self._reap()
                if self.children:
                    last = time.monotonic()
                elif self.idle and time.monotonic() - last >= self.idle:
                    self._say(f"idle for {self.idle:g} s; ending")
                    return
                ready, _, _ = select.select([listener.fileno(), woken], [], [], self.idle or None)
                if woken in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(woken, 512)
                if listener.fileno() in ready:
                    conn, _ = listener.accept()
                    last = time.monotonic()
                    with conn:
                        if not self._answer(conn):
                            return

    def _say(self, line: str) -> None:
        self.log.write(f"netlab serve: {line}\n")
        self.log.flush()

    @contextlib.contextmanager
    def _listening(self) -> Iterator[socket.socket]:
        """The socket, bound while this server holds the state directory's server lock."""
        os.makedirs(state_dir(), mode=0o700, exist_ok=True)
        lock = _server_lock()
        try:
            os.ftruncate(lock, 0)
            os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path())  # a crashed server's: the lock says none runs
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            old = os.umask(0o177)  # the socket is root's alone, also in a directory others can read
            try:
                listener.bind(socket_path())
            finally:
                os.umask(old)
            listener.listen(64)
            self.own_fds += [lock, listener.fileno()]
            try:
                yield listener
            finally:
                listener.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(socket_path())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path())  # still holding it: a server starting now makes a new one
            os.close(lock)

    @contextlib.contextmanager
    def _woken_by_children(self) -> Iterator[int]:
        """A descriptor that becomes readable when a child ends (SIGCHLD through Python's
        wakeup fd), so each is reaped, and its line logged, as it ends."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        old_handler = signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        self.own_fds += [r, w]
        try:
            yield r
        finally:
            signal.signal(signal.SIGCHLD, old_handler)
            signal.set_wakeup_fd(old_fd)
            os.close(r)
            os.close(w)

    def _answer(self, conn: socket.socket) -> bool:
        """Fork a child for the request on `conn`, or tell the client why not; False when
        the server must end (its code changed under it)."""
        conn.settimeout(5)  # only root connects; a client that sends nothing is not waited for
        fds: list[int] = []
        try:
            try:
                request = json.loads(conn.recv(MAX_REQUEST))
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                request = None
            why = self._refusal(conn, request)
            if why is not None:
                _send(conn, {"local": why})
                return why != STALE
            _send(conn, {"ready": True})
            _data, fds, _flags, _addr = socket.recv_fds(conn, 64, 4)
            if len(fds) != 4:
                _send(conn, {"local": "the server did not get the command's descriptors"})
                return True
            pid = _fork_child(conn, fds, request, self.run, self.own_fds)
            self.children[pid] = (time.monotonic(), list(request["argv"]))
            return True
        except OSError as e:
            with contextlib.suppress(OSError):
                _send(conn, {"local": f"the server could not take it: {e}"})
            return True
        finally:
            for fd in fds:
                os.close(fd)

    def _refusal(self, conn: socket.socket, request: Any) -> str | None:
        """Why this request must run in the client instead, if it must."""
        _pid, uid, _gid = _CREDENTIALS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
        if uid != os.geteuid():
            return f"the client is uid {uid}, the server's {os.geteuid()}"
        if not _well_formed(request):
            return "a request this server does not understand"
        if request["argv"][0] not in SERVED:
            return f"the server does not run `netlab {request['argv'][0]}`"
        if _code_now() != self.code:
            self._say("netlab's code changed since the server started; ending")
            return STALE
        if request["code"] != self.code:
            return "the client runs other code than the server"
        if request["namespaces"] != self.seen:
            return "the client runs in other namespaces, or with other capabilities, than the server"
        return None

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            began, argv = self.children.pop(pid, (time.monotonic(), ["?"]))
            code = os.waitstatus_to_exitcode(status)
            took, cpu = time.monotonic() - began, usage.ru_utime + usage.ru_stime
            if code == NOT_RUN:
                self._say(f"pid {pid}: netlab {' '.join(argv)} not run here: its client runs it")
            else:
                self._say(f"pid {pid}: netlab {' '.join(argv)} → exit {code} in {took:.3f} s (cpu {cpu:.3f} s)")


def _server_lock() -> int:
    """The state directory's server lock, held (ServerRunning if another server holds it).
    A file removed by the server that held it, after this one opened it, is not the lock
    any more: opened again."""
    while True:
        lock = os.open(lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock, 32, 0).decode(errors="replace").strip()
            os.close(lock)
            raise ServerRunning(f"a server runs already for {state_dir()} (pid {holder or '?'})") from None
        try:
            if os.stat(lock_path()).st_ino == os.fstat(lock).st_ino:
                return lock
        except FileNotFoundError:
            pass
        os.close(lock)


STALE = "the server's code changed since it started"
NOT_RUN = 125  # a child's exit code when it did not run the command (no netlab command's)


def _well_formed(request: Any) -> bool:
    """A request as run_served sends it (only root can send one: a check of shape, not trust)."""
    types = {
        "argv": list,
        "prog": str,
        "env": dict,
        "code": str,
        "namespaces": dict,
        "umask": int,
        "limits": dict,
        "affinity": list,
        "priority": int,
        "cgroup": str,
    }
    return (
        isinstance(request, dict)
        and all(isinstance(request.get(key), kind) for key, kind in types.items())
        and bool(request["argv"])
        and all(isinstance(a, str) for a in request["argv"])
        and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())
        and all(
            isinstance(k, str)
            and k.startswith("RLIMIT_")
            and isinstance(v, list)
            and len(v) == 2
            and all(isinstance(n, int) for n in v)
            for k, v in request["limits"].items()
        )
        and all(isinstance(cpu, int) for cpu in request["affinity"])
    )


def _code_now() -> str:
    """netlab.codeid.code_id as the files are now, not as this process first saw them."""
    return code_id.__wrapped__()


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.send(json.dumps(message).encode())


def _fork_child(
    conn: socket.socket,
    fds: list[int],
    request: dict[str, Any],
    run: Callable[[list[str], str], int],
    close: list[int],
) -> int:
    """The child's pid; the child runs the command as the client and never returns."""
    from netlab import interrupts

    pid = interrupts.fork()
    if pid:
        return pid
    code = NOT_RUN
    try:  # never back into the server's loop: the child ends here, whatever happens
        signal.set_wakeup_fd(-1)
        for fd in close:
            os.close(fd)
        if _took_the_clients_place(conn, fds, request):
            code = 1
            code = run(list(request["argv"]), request["prog"])
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            with contextlib.suppress(OSError):
                _send(conn, {"exit": code})
    finally:
        os._exit(code)


def _took_the_clients_place(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> bool:
    """Whether this child is now the client's stand-in and the client knows it (it got
    the child's pid): then the command runs here, and nowhere else."""
    try:
        _become_the_client(fds, request)
    except OSError as e:
        with contextlib.suppress(OSError):
            _send(conn, {"local": f"the server's child could not take the command's place: {e}"})
        return False
    try:
        _send(conn, {"pid": os.getpid()})
    except OSError:  # the client gave up waiting and runs the command itself
        return False
    return True


def _become_the_client(fds: list[int], request: dict[str, Any]) -> None:
    """This child takes the client's descriptors, directory, environment and limits."""
    os.setsid()  # a Ctrl-C in the server's terminal is not this command's
    for fd, target in zip(fds[:3], (0, 1, 2), strict=True):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    for fd in fds:
        os.close(fd)
    os.umask(int(request["umask"]))
    for name, (soft, hard) in request["limits"].items():
        if hasattr(resource, name):
            with contextlib.suppress(ValueError, OSError):  # a limit this kernel does not have
                resource.setrlimit(getattr(resource, name), (soft, hard))
    if request["affinity"]:
        os.sched_setaffinity(0, request["affinity"])
    os.setpriority(os.PRIO_PROCESS, 0, request["priority"])
    if request["cgroup"] != cgroup():  # the client's memory, CPU and pids limits hold for its command too
        with open(f"/sys/fs/cgroup{request['cgroup']}/cgroup.procs", "w") as f:
            f.write(f"{os.getpid()}\n")
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (fds 0-2 outlive them)
    sys.stdout = open(1, "w", 1 if os.isatty(1) else -1, "utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", 1, "utf-8", "backslashreplace", closefd=False)  # noqa: SIM115
    sys.argv = ["netlab", *request["argv"]]
    for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN if sig == signal.SIGPIPE else signal.SIG_DFL)
