"""The client's half of `netlab serve` (netlab.server), and the `netlab` command's entry
point: a command the server can run is handed to it before anything else is imported.

Stdlib only, and only what the hand-over needs: a served `up` of a 500-pod lab is ~0.8 s,
and the command's own start-up counts in it. Importing the CLI (click, dataclasses) and
the server's module (hashlib via the state, tempfile) cost ~0.03 s that a served command
never uses; they are imported only when the command runs here."""

from __future__ import annotations

import os
import sys

from netlab import interrupts

if os.path.basename(sys.argv[0]) == "netlab":
    # Before the imports below: a Ctrl-C while they load ends the command with one line
    # instead of a KeyboardInterrupt traceback.
    interrupts.handle_signals()

import contextlib
import json
import resource
import signal
import socket

from netlab.codeid import code_id
from netlab.deadline import scaled
from netlab.naming import state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


def main() -> NoReturn:
    """The `netlab` command: run by `netlab serve`'s child if one runs and can, else here."""
    interrupts.handle_signals()  # also when started under another name than `netlab`
    served = run_served(sys.argv[1:], os.path.basename(sys.argv[0]))
    if served is None:
        from netlab.cli import run_here

        run_here()
    sys.exit(served)


# The commands whose start-up the server saves: they load labs or read many namespaces.
# Not exec (a shell needs the terminal as its controlling one), capture, vm, serve.
SERVED = frozenset({"up", "down", "check", "status", "validate", "render", "trace", "graph"})
DISABLE_ENV = "NETLAB_SERVER"  # =0: never ask the server
NAMESPACES = ("mnt", "net", "pid", "user", "uts", "ipc", "cgroup")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_REQUEST = 1 << 20  # a request's JSON; a larger environment runs locally
ANSWER_TIMEOUT = 10.0  # seconds (scaled on slow machines) for the server to fork, or say why not
SOCKET_NAME = ".server.sock"  # in the state directory


def socket_path() -> str:
    return os.path.join(state_dir(), SOCKET_NAME)


def namespaces() -> dict[str, Any]:
    """Where this process runs: its namespaces and root directory (device and inode), and
    its capabilities. A command runs in the server's child only where these are the
    server's own."""
    seen: dict[str, Any] = {}
    for name in NAMESPACES:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/self/ns/{name}")
            seen[name] = [st.st_dev, st.st_ino]
    st = os.stat("/")
    seen["root"] = [st.st_dev, st.st_ino]
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        seen["capabilities"] = [line.split()[1] for line in f if line.startswith(("CapEff:", "CapBnd:"))]
    return seen


def limits() -> dict[str, list[int]]:
    """Every resource limit of this process, by its name in the resource module."""
    return {
        name: list(resource.getrlimit(getattr(resource, name))) for name in dir(resource) if name.startswith("RLIMIT_")
    }


def cgroup() -> str:
    """This process's cgroup (v2), as /proc/self/cgroup names it; "" if none."""
    try:
        with open("/proc/self/cgroup") as f:
            return next((line[3:].strip() for line in f if line.startswith("0::")), "")
    except OSError:
        return ""


def run_served(argv: list[str], prog: str) -> int | None:
    """The exit code of the command `argv` (its usage messages naming the program
    `prog`), run by the server; None when this process must run it itself (no server,
    or one that cannot run it as this process would)."""
    if not argv or argv[0] not in SERVED or os.environ.get(DISABLE_ENV) == "0" or os.geteuid() != 0:
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    except OSError:
        return None
    with sock:
        try:
            sock.connect(socket_path())  # first: without a server, a command pays nothing more
            request = json.dumps(_request(argv, prog)).encode()
            if len(request) > MAX_REQUEST:
                return None
            sock.send(request)
        except OSError:
            return None
        return _run_by_child(sock)


def _request(argv: list[str], prog: str) -> dict[str, Any]:
    umask = os.umask(0)
    os.umask(umask)
    return {
        "argv": argv,
        "prog": prog,
        "env": dict(os.environ),
        "code": code_id(),
        "namespaces": namespaces(),
        "umask": umask,
        "limits": limits(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "priority": os.getpriority(os.PRIO_PROCESS, 0),
        "cgroup": cgroup(),
    }


def _run_by_child(sock: socket.socket) -> int | None:
    """Once the server said it will fork, hand it this process's descriptors and wait for
    the child's exit code, forwarding signals to it meanwhile; None if the server declined
    (or did not answer) before forking. The descriptors go only to a server that answered:
    one that is stopped would hold them unread, and whatever reads this command's output
    would wait for its end as long."""
    forwarded: list[int] = []
    child: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        if child:
            _signal(child[0], signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        answer = _answer_in_time(sock)
        if "ready" in answer:
            answer = _answer_in_time(sock) if _send_descriptors(sock) else {"local": "it could not take them"}
        if "pid" not in answer:
            if forwarded:  # Ctrl-C before anything ran: as a command still starting ends
                name = signal.Signals(forwarded[0]).name
                sys.stderr.write(f"netlab: interrupted by {name} while starting; nothing was changed\n")
                return 128 + forwarded[0]
            _tell(f"run here, not by the server: {answer.get('local', 'it did not answer')}")
            return None
        child.append(int(answer["pid"]))
        _tell(f"run by the server's child, pid {child[0]}")
        for signum in forwarded:
            _signal(child[0], signum)
        last = _receive(sock)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if last is not None and "exit" in last:
        return int(last["exit"])
    if forwarded:
        return 128 + forwarded[0]
    sys.stderr.write(f"netlab: the server's process for this command (pid {child[0]}) ended without an exit code\n")
    return 1


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just ended: its exit code is on its way
        os.kill(pid, signum)


def _send_descriptors(sock: socket.socket) -> bool:
    """stdin, stdout, stderr and the working directory, to the server."""
    try:
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        socket.send_fds(sock, [b"descriptors"], [0, 1, 2, cwd])
        return True
    except OSError:
        return False
    finally:
        os.close(cwd)


def _answer_in_time(sock: socket.socket) -> dict[str, Any]:
    """The server's next answer. A server that does not answer in time (stopped, or
    stuck) is shut out: a child it forks later cannot send its pid and ends without
    running the command, so the command never runs twice — unless the pid came in just
    before the shutdown, and then that child runs it."""
    late = {"local": f"the server did not answer within {scaled(ANSWER_TIMEOUT):g} s"}
    sock.settimeout(scaled(ANSWER_TIMEOUT))
    try:
        return _receive(sock) or {"local": "it ended the connection"}
    except TimeoutError:
        sock.shutdown(socket.SHUT_RDWR)
        sock.setblocking(False)
        try:
            return _receive(sock) or late
        except BlockingIOError:
            return late
    finally:
        sock.settimeout(None)


def _tell(line: str) -> None:
    """With NETLAB_TIMING, which process ran the command, as the phases' times say where it went."""
    if os.environ.get("NETLAB_TIMING"):
        sys.stderr.write(f"netlab: {line}\n")


def _receive(sock: socket.socket) -> dict[str, Any] | None:
    try:
        data = sock.recv(4096)
    except (TimeoutError, BlockingIOError):
        raise
    except OSError:
        return None
    if not data:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
