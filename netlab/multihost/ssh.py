"""Commands on the hosts, through the system's OpenSSH client.

The user's own configuration applies (~/.ssh/config, the agent, keys, known_hosts,
ProxyJump); the inventory adds user, port, key and extra arguments. One connection per
host carries every command of a netlab command (ControlMaster, its socket in a private
directory), closed at the end. Commands run as root: directly when ssh logs in as root,
else through `sudo -n` (never a password prompt: a host that wants one is named).
BatchMode: ssh never asks anything either.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TypeVar

from netlab.multihost.inventory import Host

SSH_FAILED = 255  # ssh's own exit code: the host was not reached, or the connection broke
_AS_ROOT = 'if [ "$(id -u)" = 0 ]; then exec "$@"; fi; exec sudo -n -- "$@"'

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Reply:
    host: str
    code: int
    out: str
    err: str

    @property
    def unreachable(self) -> bool:
        return self.code == SSH_FAILED

    def why(self) -> str:
        """The last thing the host (or ssh) said, for a message."""
        lines = [line for line in (self.err or self.out).splitlines() if line.strip()]
        return lines[-1].removeprefix("netlab: ") if lines else f"exit code {self.code}"


def ssh_argv(host: Host, remote: str, options: list[str] | None = None) -> list[str]:
    """The ssh command line that runs `remote` on host: BatchMode (nothing is ever asked),
    the inventory's user, port, key and arguments, then `options`."""
    argv = ["ssh", "-o", "BatchMode=yes", *(options or [])]
    if host.user:
        argv += ["-l", host.user]
    if host.port:
        argv += ["-p", str(host.port)]
    if host.key_file:
        argv += ["-i", host.key_file]
    return [*argv, *host.ssh_args, host.ssh_host, "--", remote]


def as_root(argv: list[str]) -> str:
    """The remote command line that runs argv as root (sudo -n unless logged in as root)."""
    return shlex.join(["sh", "-c", _AS_ROOT, "sh", *argv])


class Ssh:
    """ssh to the inventory's hosts, one multiplexed connection each, for one command."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="netlab-ssh-")
        self._used: dict[str, Host] = {}

    def __enter__(self) -> Ssh:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def argv(self, host: Host, remote: str) -> list[str]:
        self._used[host.name] = host
        shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._dir}/%C", "-o", "ControlPersist=60"]
        return ssh_argv(host, remote, shared)

    def run(self, host: Host, remote: str, stdin: str | None = None, timeout: float = 600.0) -> Reply:
        try:
            done = subprocess.run(
                self.argv(host, remote),
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,  # a Ctrl-C is the coordinator's to handle, not ssh's
            )
        except subprocess.TimeoutExpired:
            return Reply(host.name, SSH_FAILED, "", f"no answer from {host.ssh_host} within {timeout:.0f} s")
        except OSError as e:
            return Reply(host.name, SSH_FAILED, "", f"cannot run ssh: {e.strerror or e}")
        return Reply(host.name, done.returncode, done.stdout, done.stderr)

    def start(self, host: Host, remote: str, first: bytes = b"") -> Running:
        """A long command whose stdin stays open until it ends: closing it first (or
        losing the connection) tells the remote side to stop (see engine.UP_SCRIPT).
        `first` is written to its stdin at once (what the command reads before it watches)."""
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - Running.wait closes them
        try:
            process = subprocess.Popen(
                self.argv(host, remote), stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True
            )
        except OSError as e:
            out.close()
            err.close()
            return Running(host.name, None, None, None, f"cannot run ssh: {e.strerror or e}")
        if first and process.stdin is not None:
            try:
                process.stdin.write(first)
                process.stdin.flush()
            except OSError:
                pass  # ssh is gone: wait() tells why
        return Running(host.name, process, out, err)

    def close(self) -> None:
        """Every host's master connection told to exit, all at once."""
        exits = []
        for host in list(self._used.values()):
            argv = self.argv(host, "true")
            with contextlib.suppress(OSError):
                exits.append(
                    subprocess.Popen(
                        [*argv[:-3], "-O", "exit", *argv[-3:-2]],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        for process in exits:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._used.clear()
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class Running:
    """A command started by Ssh.start; its output goes to files, so its stdin stays open."""

    host: str
    process: subprocess.Popen[bytes] | None
    out: IO[bytes] | None
    err: IO[bytes] | None
    failed: str = ""  # why it could not start

    def wait(self, timeout: float | None = None, late: Callable[[str], str] | None = None) -> Reply:
        """Its reply once it ends; after `timeout` s it is stopped (its stdin closed: the
        remote side stops, or is killed a minute later) and the reply says so, in the words
        late(what it printed so far) gives (exit code 1)."""
        if self.process is None or self.out is None or self.err is None:
            return Reply(self.host, SSH_FAILED, "", self.failed)
        overdue = ""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            overdue = late(self.output()) if late else f"no end within {timeout:.0f} s"
        self.stop()
        texts = []
        for f in (self.out, self.err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
            f.close()
        if overdue:
            return Reply(self.host, 1, texts[0], f"{texts[1]}\n{overdue}")
        return Reply(self.host, self.process.returncode, texts[0], texts[1])

    def output(self) -> str:
        """What it printed so far (read without moving the offset ssh writes at)."""
        if self.out is None or self.out.closed:
            return ""
        size = os.fstat(self.out.fileno()).st_size
        return os.pread(self.out.fileno(), size, 0).decode(errors="replace")

    def stop(self) -> None:
        """Close its stdin (the remote side stops) and wait for it to end."""
        if self.process is None:
            return
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def on_each(items: Iterable[T], work: Callable[[T], R]) -> list[R]:
    """work(item) for every item, in parallel, results in the items' order."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items)), thread_name_prefix="netlab-host") as pool:
        return list(pool.map(work, items))
