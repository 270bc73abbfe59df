"""`netlab logs` on a real lab (root): the output of the lab's `exec:` commands, kept when
`up` ran them (stdout `|`, stderr `!`, the exit status), and the responders' log, a line
per connection; NODE narrows both to that node; --follow prints connections as they come
and ends when the lab is taken down, which removes the logs.

    a 10.9.0.1 ── eth0 ═ eth0 ── b 10.9.0.2 (tcp/80)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.kernel.conftest import LabFactory, NetlabCli, state_dir

SPEC: dict[str, Any] = {
    "nodes": {
        "a": {
            "links": {"eth0": {"peer": "b:eth0", "addresses": ["10.9.0.1/24"]}},
            "exec": [["sh", "-c", "echo hello from a; echo oops >&2"], ["ip", "-br", "-4", "addr", "show", "eth0"]],
        },
        "b": {"links": {"eth0": {"addresses": ["10.9.0.2/24"]}}, "serve": ["tcp/80"]},
    },
    "checks": [{"name": "a reaches b", "probe": {"from": "a", "to": "10.9.0.2:80"}}],
}
TIME = r"\d\d:\d\d:\d\d"


def test_logs_show_exec_output_and_connections(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = lab_file(SPEC)
    assert netlab_cli("up", lab).rc == 0
    assert netlab_cli("check", lab.name).rc == 0
    r = netlab_cli("logs", lab.name)
    assert r.rc == 0, r.err
    lines = [re.sub(rf"^{TIME} ", "", line) for line in r.out.splitlines()]
    assert lines[:5] == [
        "a exec $ sh -c 'echo hello from a; echo oops >&2'",
        "a | hello from a",
        "a ! oops",
        "a exec exit status 0",
        "a exec $ ip -br -4 addr show eth0",
    ], r.out
    assert re.fullmatch(r"a \| eth0@if\d+ +UP +10\.9\.0\.1/24", lines[5].rstrip()), lines[5]
    served = [line for line in lines if re.fullmatch(r"responders\[\d+\]: tcp b:80 <- 10\.9\.0\.1:\d+", line)]
    assert len(served) == 1, r.out
    only_b = netlab_cli("logs", lab.name, "b").out.splitlines()
    assert [re.sub(rf"^{TIME} ", "", line) for line in only_b] == served
    only_exec = netlab_cli("logs", lab.name, "exec").out
    assert "responders[" not in only_exec and "hello from a" in only_exec
    bad = netlab_cli("logs", lab.name, "zz")
    assert bad.rc == 2 and f"lab {lab.name} has no node 'zz' (nodes: a, b; or: exec, responders)" in bad.err


def test_follow_prints_connections_until_the_lab_is_down(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = lab_file(SPEC)
    assert netlab_cli("up", lab).rc == 0
    proc = netlab_cli.popen("logs", lab.name, "b", "--follow")
    assert proc.stdout is not None
    try:
        assert netlab_cli("check", lab.name).rc == 0
        line = proc.stdout.readline()
        assert re.fullmatch(rf"{TIME} responders\[\d+\]: tcp b:80 <- 10\.9\.0\.1:\d+\n", line), line
        assert netlab_cli("down", lab.name).rc == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and err.strip() == f"lab {lab.name} was taken down", err
    assert out == ""  # the responder's last words are the lab's, not b's
    assert not list(Path(state_dir()).glob(f"{lab.name}.*.log"))
