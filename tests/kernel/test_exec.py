"""`netlab exec` on a real lab (root): a command's output and exit status pass through; a
missing command exits 127 and a non-executable one 126; a GLOB or --all runs on several
nodes with each line prefixed by its node and a summary of the exit statuses (--json:
one document); without a command, a shell in the node whose prompt names LAB.NODE.

    a 10.8.0.1 ── eth0 ═ eth0 ── b 10.8.0.2        c (no links)
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from netlab import json_output
from tests.kernel.conftest import LabFile, NetlabCli, Registry, cli_argv, cli_env, lab_up

SPEC: dict[str, Any] = {
    "nodes": {
        "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.8.0.1/24"]}}},
        "b": {"links": {"eth0": {"addresses": ["10.8.0.2/24"]}}},
        "c": {},
    },
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[LabFile]:
    with lab_up(registry, tmp_path_factory.mktemp("exec"), SPEC) as made:
        yield made


def test_a_command_runs_in_the_node_with_its_exit_status(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("exec", lab.name, "a", "--", "ip", "-br", "-4", "addr", "show", "eth0")
    assert r.rc == 0 and "10.8.0.1/24" in r.out, r.err
    r = netlab_cli("exec", lab.name, "b", "--", "sh", "-c", "exit 7")
    assert r.rc == 7, r.err


def test_a_missing_command_exits_127_and_a_non_executable_one_126(
    lab: LabFile, netlab_cli: NetlabCli, tmp_path: Path
) -> None:
    r = netlab_cli("exec", lab.name, "a", "--", "no-such-command-here")
    assert (r.rc, r.out) == (127, "") and "no-such-command-here: command not found" in r.err, r.err
    text = tmp_path / "notes.txt"
    text.write_text("echo not a program\n")
    text.chmod(0o644)
    r = netlab_cli("exec", lab.name, "a", "--", text)
    assert r.rc == 126 and f"{text}: permission denied" in r.err, r.err
    r = netlab_cli("exec", lab.name, "a", "--", "/no/such/file")
    assert r.rc == 127 and "/no/such/file: no such file or directory" in r.err, r.err


def test_a_glob_runs_on_the_nodes_it_matches_with_prefixed_lines(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("exec", lab.name, "[ab]", "--", "ip", "-br", "-4", "addr", "show", "eth0")
    assert r.rc == 0, r.err
    assert sorted(line.split()[0:3] for line in r.out.splitlines()) == [["a", "|", "eth0@if2"], ["b", "|", "eth0@if2"]]
    assert any(line.startswith("a | ") and "10.8.0.1/24" in line for line in r.out.splitlines()), r.out
    assert r.err.strip() == f"exec on 2 nodes of lab {lab.name}: 2 exited 0"


def test_all_sums_up_exit_statuses_and_exits_with_the_highest(lab: LabFile, netlab_cli: NetlabCli) -> None:
    script = 'echo out; echo "err" >&2; case $(ip -br link | wc -l) in 1) exit 4;; esac'
    r = netlab_cli("exec", lab.name, "--all", "--", "sh", "-c", script)
    assert r.rc == 4, r.err
    assert sorted(r.out.splitlines()) == ["a | out", "b | out", "c | out"]
    lines = r.err.splitlines()
    assert sorted(lines[:-1]) == ["a | err", "b | err", "c | err"]
    assert lines[-1] == f"exec on 3 nodes of lab {lab.name}: 2 exited 0, 1 exited 4 (c)"


def test_json_holds_every_node_and_validates(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("exec", lab.name, "--all", "--json", "--", "sh", "-c", "echo $((1+1)); exit 0")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    Draft202012Validator(json_output.schema("exec")).validate(doc)
    assert [(n["node"], n["exit"], n["stdout"]) for n in doc["nodes"]] == [
        ("a", 0, "2\n"),
        ("b", 0, "2\n"),
        ("c", 0, "2\n"),
    ]
    r = netlab_cli("exec", lab.name, "a", "--json", "--", "no-such-command-here")
    assert r.rc == 127 and json.loads(r.out)["error"]["code"] == 127, r.out


def test_an_unknown_node_or_glob_is_exit_2_with_the_nodes(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("exec", lab.name, "z", "--", "true")
    assert r.rc == 2 and f"lab {lab.name} has no node 'z' (nodes: a, b, c)" in r.err, r.err
    r = netlab_cli("exec", lab.name, "z*", "--", "true")
    assert r.rc == 2 and "no node matching 'z*'" in r.err, r.err
    r = netlab_cli("exec", lab.name, "--all")
    assert r.rc == 2 and "give the COMMAND" in r.err, r.err


def _pty_session(argv: list[str], env: dict[str, str], typed: bytes) -> tuple[int, str]:
    """argv on a pseudo-terminal (its controlling terminal); `typed` is sent once it prompts."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe(argv[0], argv, env)
    seen, sent = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal (EIO)
                    break
                if not chunk:
                    break
                seen += chunk
            if not sent and b"$ " in seen:
                os.write(fd, typed)
                sent = True
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_a_shell_in_the_node_names_it_in_its_prompt(lab: LabFile, tmp_path: Path) -> None:
    """bash reads the user's ~/.bashrc (its PS1 kept, after the [LAB.NODE] prefix), runs in
    the node, and its exit status is exec's; the rc file's descriptor is not left open."""
    (tmp_path / ".bashrc").write_text("PS1='mine$ '\n")
    env = cli_env({"SHELL": "/bin/bash", "HOME": str(tmp_path), "TERM": "dumb"})
    typed = b"ip -br -4 addr show eth0; ls -l /proc/$$/fd; echo node=$NETLAB_NODE; exit 3\n"
    code, seen = _pty_session(cli_argv("exec", lab.name, "b"), env, typed)
    assert code == 3, seen
    assert f"[{lab.name}.b] mine$ " in seen
    assert "10.8.0.2/24" in seen and "node=b" in seen
    assert "0 -> /dev/pts/" in seen and "memfd:netlab-bashrc" not in seen, seen


def test_a_plain_sh_gets_the_prompt_through_ps1(lab: LabFile) -> None:
    env = cli_env({"SHELL": "/bin/sh", "TERM": "dumb"})
    env.pop("PS1", None)
    code, seen = _pty_session(cli_argv("exec", lab.name, "c"), env, b"ip -br link | wc -l; exit\n")
    assert code == 0, seen
    assert f"[{lab.name}.c] $ " in seen
    assert "\n1\r" in seen.replace("\r\n", "\n\r") or "1\r\n" in seen, seen


def test_stdin_that_is_not_a_terminal_feeds_the_shell(lab: LabFile) -> None:
    done = subprocess.run(
        cli_argv("exec", lab.name, "a"),
        input="ip -br -4 addr show eth0\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env({"SHELL": "/bin/sh"}),
    )
    assert done.returncode == 0 and "10.8.0.1/24" in done.stdout, done.stderr
