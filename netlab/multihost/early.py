"""A command over the hosts of a lab this machine built (`check LAB`, `trace LAB`) starts
its hosts' agents first, before it imports netlab's pipeline and loads the lab: ssh
connects and netlab starts on every host (0.3-0.6 s) while the coordinator does its own
start-up (0.2-0.3 s), instead of after it.

Which hosts: the coordinator's record of the lab (netlab.multihost.record) says. The
command takes the agents when it knows its hosts (`take`): the same hosts, reached the
same way, or they are closed and it starts its own (the lab's file changed its
placement, or the inventory its hosts). Whatever is not taken is closed at exit.
Only light modules here: this runs before the pipeline is imported.
"""

from __future__ import annotations

import atexit
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from netlab.multihost.inventory import Host, load_inventory
from netlab.multihost.record import read_record
from netlab.multihost.ssh import Ssh, as_root

AGENT_COMMAND = "host-agent"


@dataclass
class Spawned:
    """`netlab host-agent` started on a host over ssh (netlab.multihost.remote.HostAgent
    talks to it)."""

    process: subprocess.Popen[str]
    stderr: IO[bytes]

    def end(self) -> None:
        """Close its stdin (the agent ends then) and wait for it; killed after 60 s."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.end()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()


def spawn_agent(ssh: Ssh, host: Host) -> Spawned:
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - Spawned.close closes it
    try:
        process = subprocess.Popen(
            ssh.argv(host, as_root([host.netlab, AGENT_COMMAND])),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # a Ctrl-C is the coordinator's to handle
        )
    except BaseException:
        stderr.close()
        raise
    return Spawned(process, stderr)


@dataclass
class Early:
    ssh: Ssh
    hosts: tuple[Host, ...]
    agents: dict[str, Spawned]

    def close(self) -> None:
        for spawned in self.agents.values():
            spawned.close()
        self.ssh.close()


_early: Early | None = None


def start(lab: str, inventory_file: str | None) -> None:
    """The agents of the hosts `lab` was built on (its record), started; nothing when
    there is no record or the inventory cannot be read (the command says why later)."""
    global _early
    record = read_record(lab)
    if record is None or _early is not None:
        return
    try:
        inventory = load_inventory(inventory_file or record.inventory)
        hosts = tuple(inventory.host(h) for h in record.hosts)
    except Exception:  # the command loads it again and reports what is wrong
        return
    ssh = Ssh()
    early = Early(ssh, hosts, {})
    _early = early
    atexit.register(_close)
    for host in hosts:
        early.agents[host.name] = spawn_agent(ssh, host)


def take(hosts: Sequence[Host]) -> Early | None:
    """The early agents if they are those of exactly `hosts`; else None (and they close)."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if set(early.hosts) != set(hosts):
        early.close()
        return None
    return early


def _close() -> None:
    global _early
    early, _early = _early, None
    if early is not None:
        early.close()
