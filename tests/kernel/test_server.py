"""`netlab serve`: commands run by a child of a resident process, on the real kernel.

Each test starts its own server on a state directory of its own (NETLAB_STATE_DIR), runs
`netlab` commands with the same directory, and ends the server by its PID; labs it
brings up are taken down with the same directory, pass or fail."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import NOBODY, CliResult, LabFactory, NetlabCli, cli_argv, cli_env, namespaces_of

SERVED = "run by the server's child"


class Served:
    """A running `netlab serve` and the environment that reaches it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = {"NETLAB_STATE_DIR": str(state)}
        self.log = state.parent / "serve.log"
        self.log_file = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            cli_argv("serve"), stdout=self.log_file, stderr=self.log_file, env=cli_env(self.env), cwd="/"
        )
        deadline = time.monotonic() + 60  # emulated machines import slowly
        while not (state / ".server.sock").exists():
            assert self.proc.poll() is None, f"netlab serve ended: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"no socket after 60 s: {self.log.read_text()}"
            time.sleep(0.05)

    def lines(self, commands: int = 0) -> list[str]:
        """The log, once it has a line for `commands` commands (each is logged once its
        child has been reaped, a moment after the client got its exit code)."""
        deadline = time.monotonic() + 30
        while True:
            lines = self.log.read_text().splitlines()
            if sum(" → exit " in line for line in lines) >= commands or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


@pytest.fixture
def served() -> Iterator[Served]:
    top = Path(tempfile.mkdtemp(prefix="netlab-serve-"))
    server = Served(top / "state")
    try:
        yield server
    finally:
        server.stop()
        for name in os.listdir(server.state) if server.state.exists() else []:
            if name.endswith(".json"):  # a lab a failing test left: down it with its own state
                subprocess.run(
                    cli_argv("down", name[: -len(".json")]),
                    env=cli_env({**server.env, "NETLAB_SERVER": "0"}),
                    capture_output=True,
                    timeout=300,
                )
        shutil.rmtree(top, ignore_errors=True)


def run(cli: NetlabCli, served: Served, *args: Any, timeout: float = 120) -> CliResult:
    return cli(*args, env={**served.env, "NETLAB_TIMING": "1"}, timeout=timeout)


def two_nodes(lab_file: LabFactory, pods: int = 0) -> Any:
    spec: dict[str, Any] = {
        "nodes": {
            "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.9.0.1/24"]}}},
            "b": {"links": {"eth0": {"addresses": ["10.9.0.2/24"]}}, "serve": ["tcp/8080"]},
        },
        "checks": [
            {"name": "a reaches b", "probe": {"from": "a", "to": "10.9.0.2", "port": 8080}, "expect": {"result": "ok"}}
        ],
    }
    if pods:
        spec["cluster"] = {
            "backend": "host-gw",
            "pod_cidr": "10.244.0.0/16",
            "nodes": {"node1": {}},
            "pods": {"web": {"replicas": pods}},
        }
    return lab_file(spec)


def test_a_lab_goes_up_is_checked_and_down_through_the_server(
    served: Served, netlab_cli: NetlabCli, lab_file: LabFactory
) -> None:
    lab = two_nodes(lab_file)
    up = run(netlab_cli, served, "up", lab)
    assert up.rc == 0, up.err
    assert SERVED in up.err, up.err
    assert f"lab {lab.name} is up: 2 nodes" in up.out
    assert sorted(namespaces_of(lab.name)) == [lab.ns("a"), lab.ns("b")]
    assert (served.state / f"{lab.name}.json").exists()  # the client's state directory, not the server's

    check = run(netlab_cli, served, "check", lab.name, "--json")
    assert check.rc == 0, check.out + check.err
    assert SERVED in check.err
    result = json.loads(check.out)
    assert [(c["name"], c["passed"]) for c in result["checks"]] == [("a reaches b", True)]

    status = run(netlab_cli, served, "status", lab.name, "--json")
    assert status.rc == 0 and SERVED in status.err, status.err
    assert set(json.loads(status.out)["labs"][0]["nodes"]) == {"a", "b"}

    down = run(netlab_cli, served, "down", lab.name)
    assert down.rc == 0 and SERVED in down.err, down.err
    assert namespaces_of(lab.name) == []
    logged = [line for line in served.lines(4) if f"{lab.name}" in line]
    assert [line.split("→ ")[1].split(" in ")[0] for line in logged] == ["exit 0"] * 4, served.lines()


def test_output_and_exit_codes_are_the_commands_own(served: Served, netlab_cli: NetlabCli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnodes:\n  a: {mtu: x}\n")
    good = Path(__file__).resolve().parents[2] / "labs" / "docker-bridge.yaml"
    runs = (["validate", bad], ["validate", good], ["render", good], ["up", "--dry-run", good], ["up"])
    for argv in runs:
        here = netlab_cli(*argv, env={**served.env, "NETLAB_SERVER": "0"})
        there = netlab_cli(*argv, env=served.env)
        timed = run(netlab_cli, served, *argv)  # NETLAB_TIMING=1: says which process ran it
        assert SERVED in timed.err, timed.err
        assert (there.rc, there.out, there.err) == (here.rc, here.out, here.err), argv
    lines = served.lines(2 * len(runs))
    for argv in runs:  # each logged twice, with the command's exit code
        command = " ".join(map(str, argv))
        codes = [line.split(" → ")[1].split(" in ")[0] for line in lines if f"netlab {command} → " in line]
        assert codes == [f"exit {netlab_cli(*argv).rc}"] * 2, (command, lines)


def entry_point(*args: Any) -> list[str]:
    """The `netlab` command as its console script runs it (netlab.client.main, argv[0]
    `netlab`), printing every import it makes (-X importtime, on stderr)."""
    code = "import sys; sys.argv[0] = 'netlab'; from netlab.client import main; main()"
    return [sys.executable, "-X", "importtime", "-c", code, *map(str, args)]


def test_the_command_hands_a_served_command_over_before_it_imports_the_cli(served: Served, tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[2] / "labs" / "docker-bridge.yaml"
    for argv in (["validate", good], ["up"]):  # a lab, and a usage error naming the program
        outcomes = []
        for extra in ({"NETLAB_TIMING": "1"}, {"NETLAB_SERVER": "0"}):
            proc = subprocess.run(
                entry_point(*argv), env=cli_env({**served.env, **extra}), capture_output=True, text=True, timeout=120
            )
            imported = {
                line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
            }
            said = [line for line in proc.stderr.splitlines() if not line.startswith(("import time:", "netlab: "))]
            outcomes.append((proc.returncode, proc.stdout, said, imported))
            assert (SERVED in proc.stderr) == ("NETLAB_TIMING" in extra), proc.stderr
        (rc, out, err, imported), (rc_here, out_here, err_here, imported_here) = outcomes
        assert (rc, out, err) == (rc_here, out_here, err_here), argv
        assert {"click", "netlab.cli", "netlab.server", "pydantic"} & imported == set(), (argv, sorted(imported))
        assert {"click", "netlab.cli"} <= imported_here, argv  # run here, it needs the CLI
    assert "Usage: netlab up [OPTIONS] FILE" in "\n".join(err), err
    assert sum(" → exit " in line for line in served.lines(2)) == 2, served.lines()


def test_ctrl_c_reaches_the_command_and_undoes_it(served: Served, lab_file: LabFactory) -> None:
    lab = two_nodes(lab_file, pods=150)
    proc = subprocess.Popen(
        cli_argv("up", lab),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env({**served.env, "NETLAB_TIMING": "1"}),
        cwd="/",
    )
    assert proc.stderr is not None
    seen: list[str] = []
    with selectors.DefaultSelector() as sel:  # until the server's child runs it and has made namespaces
        sel.register(proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while not any("namespaces" in line for line in seen) and time.monotonic() < deadline:
            if sel.select(1) and (line := proc.stderr.readline()):
                seen.append(line)
    assert any(SERVED in line for line in seen), seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + err
    assert "interrupted by SIGINT" in err and "removed" in err, err
    assert namespaces_of(lab.name) == []
    assert not (served.state / f"{lab.name}.json").exists()
    assert any(f"{lab.name}" in line and "exit 130" in line for line in served.lines(1)), served.lines()


def test_a_client_in_other_namespaces_runs_the_command_itself(served: Served) -> None:
    good = Path(__file__).resolve().parents[2] / "labs" / "docker-bridge.yaml"
    # A private mount namespace has its own /run/netns: the server's would be the wrong one.
    p = subprocess.run(
        ["unshare", "--mount", *cli_argv("validate", str(good))],
        capture_output=True,
        text=True,
        env=cli_env({**served.env, "NETLAB_TIMING": "1"}),
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert (
        "run here, not by the server: the client runs in other namespaces, or with other capabilities, than the server"
        in p.stderr
    )
    p = subprocess.run(
        cli_argv("validate", str(good)),
        capture_output=True,
        text=True,
        env=cli_env({**served.env, "NETLAB_SERVER": "0"}),
    )
    assert p.returncode == 0 and "server" not in p.stderr, p.stderr
    assert len(served.lines()) == 1, served.lines()  # neither was run by the server


def test_only_root_reaches_the_socket_and_bad_requests_are_refused(served: Served) -> None:
    path = served.state / ".server.sock"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for d in (served.state.parent, served.state):  # so that only the socket's own mode keeps nobody out
        d.chmod(0o755)
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])"
    p = subprocess.run(
        [*NOBODY, "/usr/bin/python3", "-c", probe, str(path)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode != 0 and "PermissionError" in p.stderr, p.stderr
    hostile: list[tuple[bytes, list[int]]] = [
        (b"not json", [0, 1, 2, 0]),
        (b'{"argv": ["up"]}', []),
        (b"{}", []),
        (b"[" * 150_000, []),  # nested deeper than the JSON parser goes
    ]
    for payload, fds in hostile:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.connect(str(path))
            socket.send_fds(s, [payload], fds)
            s.settimeout(30)
            answer = json.loads(s.recv(4096))
        assert answer == {"local": "a request this server does not understand"}, answer
    # A request as a client sends it, then no descriptors: nothing is forked.
    request = json.loads(
        subprocess.run(
            [sys.executable, "-c", "import json, netlab.client as s; print(json.dumps(s._request(['validate'], 'n')))"],
            capture_output=True,
            text=True,
            env=cli_env(),
            check=True,
        ).stdout
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(str(path))
        s.send(json.dumps(request).encode())
        s.settimeout(30)
        assert json.loads(s.recv(4096)) == {"ready": True}
        s.send(b"no descriptors")
        assert json.loads(s.recv(4096)) == {"local": "the server did not get the command's descriptors"}
    assert served.proc.poll() is None  # still serving


def test_one_server_per_state_directory_and_idle_servers_end(served: Served, netlab_cli: NetlabCli) -> None:
    again = netlab_cli("serve", env=served.env)
    assert again.rc == 1
    assert f"a server runs already for {served.state} (pid {served.proc.pid})" in again.err
    served.stop()  # SIGTERM: one line, exit 143, its socket and lock gone
    assert served.proc.returncode == 143, served.lines()
    assert served.lines()[-1] == "netlab serve: ended by SIGTERM", served.lines()
    assert sorted(os.listdir(served.state)) == []
    idle = netlab_cli("serve", "--idle", "0.5", env=served.env, timeout=120)
    assert idle.rc == 0, idle.err
    assert "idle for 0.5 s; ending" in idle.err
    assert sorted(os.listdir(served.state)) == []  # neither its socket nor its lock is left


def test_a_server_that_does_not_answer_is_not_waited_for_and_never_runs_it_too(
    served: Served, netlab_cli: NetlabCli
) -> None:
    good = Path(__file__).resolve().parents[2] / "labs" / "docker-bridge.yaml"
    served.proc.send_signal(signal.SIGSTOP)
    try:
        r = run(netlab_cli, served, "validate", good, timeout=300)
    finally:
        served.proc.send_signal(signal.SIGCONT)
    assert r.rc == 0, r.err
    assert "run here, not by the server: the server did not answer within" in r.err, r.err
    # Resumed, it finds the client gone before it asked for the descriptors: it runs
    # nothing for it, and serves the next command.
    again = run(netlab_cli, served, "validate", good)
    assert again.rc == 0 and SERVED in again.err, again.err
    assert [line for line in served.lines(1) if " → exit " in line or "not run" in line] == [
        line for line in served.lines() if "validate" in line and "→ exit 0" in line
    ]
    assert len([line for line in served.lines() if "validate" in line]) == 1, served.lines()


def test_the_command_keeps_the_callers_limits_cpus_and_priority(
    served: Served, netlab_cli: NetlabCli, lab_file: LabFactory
) -> None:
    limited = ["prlimit", "--nofile=777:777", "--nproc=4321:4321", "taskset", "-c", "0", "nice", "-n", "7"]
    report = "grep -E 'Max (open files|processes)' /proc/self/limits; grep Cpus_allowed_list /proc/self/status; nice"
    seen = {}
    for how in ("0", "1"):
        lab = lab_file({"nodes": {"a": {"exec": [["sh", "-c", report]]}}})
        p = subprocess.run(
            [*limited, *cli_argv("up", str(lab))],
            capture_output=True,
            text=True,
            env=cli_env({**served.env, "NETLAB_TIMING": "1", "NETLAB_SERVER": how}),
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        assert (SERVED in p.stderr) == (how == "1"), p.stderr
        logs = run(netlab_cli, served, "logs", lab.name, "exec")
        # "HH:MM:SS a | LINE": what the exec command printed, without when
        seen[how] = [line.split(" | ", 1)[1] for line in logs.out.splitlines() if " a | " in line]
        assert run(netlab_cli, served, "down", lab.name).rc == 0
    assert seen["1"] == seen["0"], seen
    assert any("777" in line for line in seen["1"]) and any("4321" in line for line in seen["1"]), seen
    assert any(line.split()[-1] == "0" for line in seen["1"] if "Cpus_allowed_list" in line), seen
    assert seen["1"][-1].strip() == "7", seen
