"""Simulated hosts on one machine, for multihost tests and benchmarks: real sshd, real ssh.

    with SimulatedHosts(2, netlab=".venv/bin/netlab") as sim:
        sim.coordinator(["netlab", "up", "--hosts", sim.inventory, "labs/flannel-vxlan.yaml"])

Everything lives in namespaces made here, none in the machine's own network namespace:

- the underlay: a network namespace with a bridge (MTU 9000), the wire between hosts;
- the coordinator: a network namespace on it (…​.1), where `coordinator()` runs commands
  (the machine you type on);
- each host: a network namespace on the underlay (…​.2, .3, …) in which a PID and a private
  mount namespace run Debian's sshd with a generated host key. The host has its own /run
  (tmpfs: its /run/netns and netlab's /run/netlab), so the labs it builds are its own.

The coordinator reaches the hosts as root through the system's `ssh`, with a generated
key, known_hosts and ssh_config (`-F`, so the user's own configuration is not read),
written into the inventory. `close()` ends each host's PID namespace by the PID of the
`unshare` that holds it (its --kill-child takes every process of the host with it, and
the lab namespaces go with its mount namespace), then deletes the namespaces made here;
it runs on failure too (a context manager, or atexit from a script).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from netlab.client import SOCKET_NAME
from netlab.naming import STATE_DIR

SSHD = "/usr/sbin/sshd"
SUBNET = "10.250.0"  # inside the underlay namespace only
UNDERLAY_MTU = 9000


@dataclass
class SimulatedHost:
    name: str
    netns: str
    address: str
    process: subprocess.Popen[bytes] | None = None  # `unshare`, holding the host's PID namespace

    @property
    def init(self) -> int:
        """The host's PID 1 (sshd's parent), as this machine numbers it."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class SimulatedHosts:
    count: int
    netlab: str  # how the hosts run netlab (the same filesystem: this checkout's)
    serve: bool = False  # each host also runs `netlab serve`, as a host set up for speed would
    # one process may run two simulations at once (a test module's and another fixture's)
    prefix: str = field(default_factory=lambda: f"nlmh{os.getpid() % 100000}{secrets.token_hex(2)}")
    hosts: list[SimulatedHost] = field(default_factory=list)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="netlab-sim-")))
    made: list[str] = field(default_factory=list)  # namespaces, in creation order

    @property
    def underlay(self) -> str:
        return f"{self.prefix}-ul"

    @property
    def coordinator_ns(self) -> str:
        return f"{self.prefix}-co"

    @property
    def inventory(self) -> str:
        return str(self.dir / "hosts.yaml")

    def __enter__(self) -> SimulatedHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ building

    def start(self) -> None:
        self._netns(self.underlay)
        _ip("-n", self.underlay, "link", "add", "br0", "mtu", str(UNDERLAY_MTU), "up", "type", "bridge")
        self._attach(self.coordinator_ns, 1)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "id")], check=True)
        known = []
        for i in range(self.count):
            host = SimulatedHost(f"h{i + 1}", f"{self.prefix}-h{i + 1}", f"{SUBNET}.{i + 2}")
            self._attach(host.netns, i + 2)
            key = self.dir / f"{host.name}.key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            known.append(f"{host.address} {key.with_suffix('.key.pub').read_text().strip()}")
            self.hosts.append(host)
            self.start_host(host)
        (self.dir / "known_hosts").write_text("\n".join(known) + "\n")
        (self.dir / "ssh_config").write_text(
            f"Host *\n  User root\n  IdentityFile {self.dir / 'id'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.dir / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 8\n  LogLevel ERROR\n"
        )
        lines = ["all:", "  vars:", f"    netlab_mtu: {UNDERLAY_MTU}", f"    netlab_command: {self.host_netlab}"]
        lines.append(f"    ansible_ssh_common_args: -F {self.dir / 'ssh_config'}")
        lines += ["  hosts:", *[f"    {h.name}: {{ansible_host: {h.address}}}" for h in self.hosts]]
        Path(self.inventory).write_text("\n".join(lines) + "\n")
        for host in self.hosts:
            self.wait_reachable(host)
            if self.serve:
                self.wait_served(host)

    @property
    def host_netlab(self) -> str:
        """How the hosts run netlab (the inventory's netlab_command): `netlab`, with this
        process's PYTHONPATH (sshd passes no environment on), so a checkout run with
        PYTHONPATH=… is the hosts' netlab too."""
        path = os.environ.get("PYTHONPATH")
        wrapper = self.dir / "netlab"
        if not path or wrapper.exists():
            return str(wrapper) if path else self.netlab
        wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(path)} exec {shlex.quote(self.netlab)} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _attach(self, netns: str, index: int) -> None:
        """A namespace with eth0 on the underlay bridge at SUBNET.index."""
        self._netns(netns)
        port, mtu = f"p{index}", str(UNDERLAY_MTU)
        peer = ["peer", "name", "eth0", "netns", netns, "mtu", mtu]
        _ip("-n", self.underlay, "link", "add", port, "mtu", mtu, "master", "br0", "up", "type", "veth", *peer)
        _ip("-n", netns, "addr", "add", f"{SUBNET}.{index}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")

    def start_host(self, host: SimulatedHost) -> None:
        """The host's PID and private mount namespace, its own /run, and sshd in it."""
        config = self.dir / f"{host.name}.sshd_config"
        config.write_text(
            f"ListenAddress {host.address}\nHostKey {self.dir / f'{host.name}.key'}\nPidFile none\n"
            f"AuthorizedKeysFile {self.dir / 'id.pub'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PrintMotd no\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n"
        )
        serve = f"{shlex.quote(self.host_netlab)} serve & " if self.serve else ""
        script = (
            "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/sshd /run/netns /run/netlab || exit 1; "
            f"{serve}{SSHD} -D -e -f {shlex.quote(str(config))} & exec sleep infinity"
        )
        unshare = ["unshare", "--pid", "--kill-child", "--mount-proc", "--propagation", "private"]
        log = open(self.dir / f"{host.name}.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            host.process = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *unshare, "sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_reachable(self, host: SimulatedHost, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = self.ssh(host, ["true"], timeout=10)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = (self.dir / f"{host.name}.log").read_text(errors="replace")
                raise RuntimeError(f"simulated host {host.name} is not reachable: {done.stderr.strip()}\n{log}")
            time.sleep(0.1)

    def wait_served(self, host: SimulatedHost, timeout: float = 120.0) -> None:
        """Until the host's `netlab serve` listens (it imports netlab's pipeline first)."""
        deadline = time.monotonic() + timeout
        while self.inside(host, ["test", "-S", f"{STATE_DIR}/{SOCKET_NAME}"]).returncode != 0:
            if time.monotonic() > deadline:
                log = (self.dir / f"{host.name}.log").read_text(errors="replace")
                raise RuntimeError(f"netlab serve does not listen on simulated host {host.name}:\n{log}")
            time.sleep(0.1)

    # ------------------------------------------------------------ using

    def coordinator(self, argv: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run argv on the coordinator (its own network namespace on the underlay)."""
        return subprocess.run(
            self.coordinator_argv(argv), capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def coordinator_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.coordinator_ns, *argv]

    @property
    def env(self) -> dict[str, str]:
        """The coordinator's environment: its record of labs over hosts kept with the simulation."""
        return {**os.environ, "XDG_STATE_HOME": str(self.dir / "state")}

    def ssh(self, host: SimulatedHost, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """argv on the host, as root, through ssh from the coordinator."""
        ssh = ["ssh", "-F", str(self.dir / "ssh_config"), host.address, "--", shlex.join(argv)]
        return self.coordinator(ssh, timeout=timeout)

    def host(self, name: str) -> SimulatedHost:
        return next(h for h in self.hosts if h.name == name)

    def inside(self, host: SimulatedHost, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """argv inside the host (its network, mount and PID namespaces), without ssh."""
        return subprocess.run(self.inside_argv(host, argv), capture_output=True, text=True, timeout=60)

    def inside_argv(self, host: SimulatedHost, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(host.init), "-n", "-m", "-p", *argv]

    def sshd_pids(self, host: SimulatedHost) -> list[int]:
        """The host's sshd processes (the listener and every session's), by PID."""
        ns = os.readlink(f"/proc/{host.init}/ns/pid")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                same = os.readlink(f"/proc/{entry}/ns/pid") == ns
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if same and comm in ("sshd", "sshd-session"):
                found.append(int(entry))
        return found

    def kill_sshd(self, host: SimulatedHost) -> None:
        """SIGKILL the host's sshd and its sessions; the rest of the host lives on."""
        for pid in self.sshd_pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart_sshd(self, host: SimulatedHost) -> None:
        started = self.inside(host, [SSHD, "-f", str(self.dir / f"{host.name}.sshd_config")])  # daemonises
        if started.returncode != 0:
            raise RuntimeError(f"sshd did not start again on {host.name}: {started.stderr.strip()}")
        self.wait_reachable(host)

    def set_reachable(self, host: SimulatedHost, reachable: bool) -> None:
        """Unplug (or plug back) the host's underlay port: ssh and tunnels time out."""
        port = f"p{self.hosts.index(host) + 2}"
        _ip("-n", self.underlay, "link", "set", port, "up" if reachable else "down")

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        for host in self.hosts:
            if host.process is not None and host.process.poll() is None:
                host.process.kill()  # unshare: --kill-child ends the host's PID namespace
                host.process.wait(timeout=30)
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
