"""Fixtures for the real-kernel tests (root only: they build real network namespaces).

Everything here lives in namespaces the tests create, named `<lab>.<node>` with a
unique lab name per test (`t-<8 hex>`); nothing is done in the machine's own network
namespace, and nothing is removed that the tests did not create. Every lab a test
makes is taken down after it, also when it fails, and a session guard fails loudly if
any namespace, state file or lock file of those labs is still there at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

KERNEL_TESTS = Path(__file__).resolve().parent
REPO = KERNEL_TESTS.parent.parent
NETNS_DIR = "/run/netns"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/kernel needs root (tests/conftest.py skips it otherwise)."""
    for item in items:
        if KERNEL_TESTS in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.root)


# ---------------------------------------------------------------- names, state, namespaces


def state_dir() -> str:
    return os.environ.get("NETLAB_STATE_DIR", "/run/netlab")


def state_file(lab: str) -> Path:
    return Path(state_dir()) / f"{lab}.json"


def lock_file(lab: str) -> Path:
    return Path(state_dir()) / f".{lab}.lock"


def namespaces_of(lab: str) -> list[str]:
    """Named namespaces that belong to `lab` by name (`<lab>.<anything>`)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{lab}."))
    except FileNotFoundError:
        return []


def leftovers(lab: str) -> list[str]:
    from netlab.probes.responders import responders_of

    found = [f"namespace {n}" for n in namespaces_of(lab)]
    logs = [Path(state_dir()) / f"{lab}.{kind}.log" for kind in ("responders", "exec")]
    found += [f"state file {p}" for p in (state_file(lab), lock_file(lab), *logs) if p.exists()]
    found += [f"responder process {pid}" for pid in responders_of(lab)]
    return found


@dataclass
class Registry:
    """Every lab name the tests hand out, for the end-of-session leak check."""

    names: set[str] = field(default_factory=set)

    def new_name(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.names.add(name)
        return name


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry()


@pytest.fixture(scope="session", autouse=True)
def _no_leaks_guard(registry: Registry) -> Iterator[None]:
    yield
    leaks = {lab: found for lab in sorted(registry.names) if (found := leftovers(lab))}
    if not leaks:
        return
    lines = [f"  {lab}: {', '.join(found)}" for lab, found in leaks.items()]
    # Leave the machine clean all the same: these are ours (unique names we made up).
    # `netlab down` also ends the lab's responders, which `ip netns del` would strand.
    for lab in leaks:
        subprocess.run(cli_argv("down", lab), check=False, capture_output=True, timeout=120, env=cli_env())
        for ns in namespaces_of(lab):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        for p in (state_file(lab), lock_file(lab)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    pytest.fail("the tests left lab objects behind (removed them now):\n" + "\n".join(lines), pytrace=False)


# ---------------------------------------------------------------- the CLI


class CliResult(NamedTuple):
    rc: int
    out: str
    err: str


def cli_argv(*args: str, nobody: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "netlab.cli", *map(str, args)]
    return [*NOBODY, *argv] if nobody else argv


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    # This checkout's netlab, also where it is not installed into the interpreter.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class NetlabCli:
    """`netlab ARGS…` as a subprocess (`python -m netlab.cli`, so any venv works)."""

    def __call__(
        self,
        *args: Any,
        nobody: bool = False,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        cwd: str | os.PathLike[str] | None = None,
    ) -> CliResult:
        proc = subprocess.run(
            cli_argv(*args, nobody=nobody),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(env),
            cwd=cwd or "/",
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            cli_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(env), cwd="/"
        )


@pytest.fixture(scope="session")
def netlab_cli() -> NetlabCli:
    return NetlabCli()


def take_down(lab: str) -> None:
    """`netlab down LAB` if anything of the lab is there (cleanup after a test)."""
    if not namespaces_of(lab) and not state_file(lab).exists():
        return
    subprocess.run(cli_argv("down", lab), capture_output=True, text=True, timeout=300, env=cli_env())


# ---------------------------------------------------------------- lab files


@dataclass(frozen=True)
class LabFile:
    name: str
    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def ns(self, node: str) -> str:
        return f"{self.name}.{node}"


def write_lab(
    registry: Registry,
    directory: Path,
    spec: dict[str, Any] | str,
    name: str | None = None,
    filename: str | None = None,
) -> LabFile:
    """Write a lab file with a unique lab name. A dict gets `name:` set; in a string,
    `@LAB@` is replaced by the name (so bad-lab texts keep their exact lines)."""
    name = name or registry.new_name()
    registry.names.add(name)
    if isinstance(spec, str):
        text = spec.replace("@LAB@", name)
    else:
        text = yaml.safe_dump({"name": name, **{k: v for k, v in spec.items() if k != "name"}}, sort_keys=False)
    path = directory / (filename or f"{name}.yaml")
    path.write_text(text)
    return LabFile(name, path)


class LabFactory:
    def __init__(self, registry: Registry, directory: Path) -> None:
        self.registry = registry
        self.directory = directory
        self.made: list[str] = []

    def __call__(
        self,
        spec: dict[str, Any] | str,
        name: str | None = None,
        filename: str | None = None,
        directory: Path | None = None,
    ) -> LabFile:
        lab = write_lab(self.registry, directory or self.directory, spec, name, filename)
        self.made.append(lab.name)
        return lab

    def new_name(self) -> str:
        name = self.registry.new_name()
        self.made.append(name)
        return name

    def cleanup(self) -> None:
        for name in dict.fromkeys(self.made):
            take_down(name)


@contextlib.contextmanager
def lab_up(registry: Registry, directory: Path, spec: dict[str, Any]) -> Iterator[LabFile]:
    """A lab file for `spec`, brought up with `netlab up` (a module-scoped fixture's lab,
    shared by its tests) and taken down afterwards, pass or fail."""
    factory = LabFactory(registry, directory)
    try:
        made = factory(spec)
        r = NetlabCli()("up", made)
        assert r.rc == 0, r.err
        yield made
    finally:
        factory.cleanup()


@pytest.fixture
def lab_file(registry: Registry, tmp_path: Path) -> Iterator[LabFactory]:
    """lab_file(spec) → LabFile(name, path): a lab file with a unique name in tmp_path.
    Whatever the test brought up is taken down afterwards (`netlab down`), pass or fail."""
    factory = LabFactory(registry, tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the unprivileged user (nobody) can read, for its lab files
    (pytest's own tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="netlab-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- what the kernel says


def run_in(ns: str, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout, check=check
    )


def ip_json(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-j", "-n", ns, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def links(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json(ns, "-d", "link")}


def addresses(ns: str, family: str = "") -> dict[str, list[dict[str, Any]]]:
    args = [f"-{family}"] if family else []
    return {link["ifname"]: link.get("addr_info", []) for link in ip_json(ns, *args, "addr")}


def address_set(ns: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for infos in addresses(ns).values() for a in infos}


def routes(ns: str, family: int = 4) -> list[dict[str, Any]]:
    return list(ip_json(ns, f"-{family}", "route", "show", "table", "all"))


def rules(ns: str, family: int = 4) -> list[dict[str, Any]]:
    return list(ip_json(ns, f"-{family}", "rule"))


def sysctl(ns: str, key: str) -> str:
    return run_in(ns, "cat", "/proc/sys/" + key.replace(".", "/")).stdout.strip()


def snapshot(lab: str) -> dict[str, Any]:
    """What the kernel shows of a lab, to tell if anything changed. Without counters,
    timers and operstate: the kernel moves a new link's operstate from UNKNOWN to UP
    on its own, a moment after the link came up."""

    def settled(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "operstate"} for e in entries]

    view: dict[str, Any] = {}
    for ns in namespaces_of(lab):
        view[ns] = {
            "links": settled(ip_json(ns, "link")),
            "addr": settled(ip_json(ns, "addr")),
            "routes": routes(ns, 4) + routes(ns, 6),
            "rules": rules(ns, 4) + rules(ns, 6),
        }
    return view


# Traffic. Without iputils ping, an ICMP echo from a raw socket does the same: the
# target's kernel answers it, so only the sender runs a process.
PING_PY = r"""
import ipaddress, os, select, socket, struct, sys, time
addr, timeout = sys.argv[1], float(sys.argv[2])
six = ipaddress.ip_address(addr).version == 6
if six:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    req, rep = 128, 129
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    req, rep = 8, 0
ident, payload = os.getpid() & 0xFFFF, b"netlab kernel test"

def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while t >> 16:
        t = (t >> 16) + (t & 0xFFFF)
    return ~t & 0xFFFF

pkt = struct.pack("!BBHHH", req, 0, 0, ident, 1) + payload
if not six:  # the kernel checksums ICMPv6 itself
    pkt = struct.pack("!BBHHH", req, 0, csum(pkt), ident, 1) + payload
s.sendto(pkt, (addr, 0))
deadline = time.monotonic() + timeout
while True:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        print(f"no echo reply from {addr}")
        sys.exit(1)
    data, src = s.recvfrom(65535)
    if not six:
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 8:
        continue
    kind, _, _, rid, seq = struct.unpack("!BBHHH", data[:8])
    same = ipaddress.ip_address(src[0].split("%")[0]) == ipaddress.ip_address(addr)
    if kind == rep and rid == ident and seq == 1 and same:
        print(f"echo reply from {addr}")
        sys.exit(0)
"""


def ping(ns: str, addr: str, timeout: float = 2.0, attempts: int = 2, python: bool = False) -> tuple[bool, str]:
    """One ICMP echo from namespace `ns` to `addr` (iputils ping if installed, unless python)."""
    out = ""
    for _ in range(attempts):
        if shutil.which("ping") and not python:
            argv = ["ping", "-c1", f"-W{int(max(1, timeout))}", addr]
        else:
            argv = [sys.executable, "-c", PING_PY, addr, str(timeout)]
        proc = run_in(ns, *argv, timeout=timeout + 10, check=False)
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0:
            return True, out
    return False, out


def assert_ping(ns: str, addr: str) -> None:
    ok, out = ping(ns, addr)
    assert ok, f"ping from {ns} to {addr} failed: {out}"


def assert_no_ping(ns: str, addr: str) -> None:
    ok, out = ping(ns, addr, timeout=0.5, attempts=1)
    assert not ok, f"ping from {ns} to {addr} should fail, but: {out}"


TCP_SERVER_PY = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(1)
s.settimeout(15)
print("ready", flush=True)
c, peer = s.accept()
c.settimeout(5)
data = c.recv(100)
c.sendall(data.upper() + b" from " + peer[0].encode())
c.close()
"""

TCP_CLIENT_PY = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
c = socket.create_connection((addr, port), timeout=5)
c.sendall(b"hello")
print(c.recv(200).decode())
"""


def tcp_exchange(server_ns: str, server_addr: str, client_ns: str, port: int = 7777) -> str:
    """A TCP request/response between two lab namespaces; returns the client's answer."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", TCP_SERVER_PY, server_addr, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().strip()
        assert ready == "ready", f"server in {server_ns} did not start: {server.stderr.read() if server.stderr else ''}"
        client = run_in(client_ns, sys.executable, "-c", TCP_CLIENT_PY, server_addr, str(port), check=False)
        assert client.returncode == 0, f"client in {client_ns}: {client.stderr}"
        return client.stdout.strip()
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()


def wait_for(predicate: Any, timeout: float, interval: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Kernel:
    """The helpers above, as a fixture (test modules cannot import a conftest reliably)."""

    namespaces_of = staticmethod(namespaces_of)
    leftovers = staticmethod(leftovers)
    state_file = staticmethod(state_file)
    lock_file = staticmethod(lock_file)
    run_in = staticmethod(run_in)
    ip_json = staticmethod(ip_json)
    links = staticmethod(links)
    addresses = staticmethod(addresses)
    address_set = staticmethod(address_set)
    routes = staticmethod(routes)
    rules = staticmethod(rules)
    sysctl = staticmethod(sysctl)
    snapshot = staticmethod(snapshot)
    ping = staticmethod(ping)
    assert_ping = staticmethod(assert_ping)
    assert_no_ping = staticmethod(assert_no_ping)
    tcp_exchange = staticmethod(tcp_exchange)
    wait_for = staticmethod(wait_for)
    take_down = staticmethod(take_down)
    write_lab = staticmethod(write_lab)
    cli_argv = staticmethod(cli_argv)
    nobody = NOBODY
    repo = REPO


@pytest.fixture(scope="session")
def kn() -> Kernel:
    return Kernel()
