"""State that explains itself (root, real kernel): a dead responder is shown as dead by
`status` and named by the checks it breaks; a state file that is empty, torn or not
netlab's is named by every command that meets it, with what to do; the state records the
lab file and its hash; two files with one lab name, and a change of description or
checks, are explained key by key.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from typing import Any

import pytest
import yaml

from netlab.probes.responders import is_running

SERVED = {
    "nodes": {
        "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.7.0.1/24"]}}},
        "b": {"links": {"eth0": {"addresses": ["10.7.0.2/24"]}}, "serve": ["tcp/8080"]},
    },
    "checks": [
        {
            "name": "a reaches b",
            "probe": {"from": "a", "to": "10.7.0.2", "proto": "tcp", "port": 8080},
            "expect": {"result": "ok", "served_by": "b"},
        }
    ],
}


def _state(kn: Any, lab: str) -> dict[str, Any]:
    return dict(json.loads(kn.state_file(lab).read_text()))


def _wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 10
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not is_running(pid)


@pytest.mark.parametrize(
    ("sig", "words"), [(signal.SIGKILL, "exit status unknown"), (signal.SIGTERM, "exit status 0: stopped by SIGTERM")]
)
def test_a_dead_responder_is_shown_and_explains_the_checks(
    sig: signal.Signals, words: str, lab_file: Any, kn: Any, netlab_cli: Any
) -> None:
    lab = lab_file(SERVED)
    assert netlab_cli("up", lab.path).rc == 0
    (pid,) = _state(kn, lab.name)["pids"]
    rc, out, _ = netlab_cli("status", lab.name)
    assert rc == 0 and f"responders: PID {pid} running" in out
    os.kill(pid, sig)
    _wait_dead(pid)

    rc, out, err = netlab_cli("status", lab.name)
    assert rc == 0, err
    assert f"responders: PID {pid} dead ({words}" in out
    assert f"lab {lab.name}: 1 of its 1 responder processes is dead" in err
    assert f"netlab down {lab.name} && netlab up {lab.path.resolve()}" in err
    rc, out, _ = netlab_cli("status", lab.name, "--json")
    (st,) = json.loads(out)["labs"]
    assert st["responders"] == [{"pid": pid, "running": False, "exit": st["responders"][0]["exit"]}]
    assert (st["responders"][0]["exit"] is None) == (sig == signal.SIGKILL)

    rc, out, _ = netlab_cli("check", lab.name)
    assert rc == 1
    assert "refused; " in out or "refused" in out
    assert "the lab's responder is dead" in out
    assert f"nothing answers there: the lab's responder process is dead (PID {pid} dead" in out
    assert netlab_cli("down", lab.name).rc == 0
    assert kn.leftovers(lab.name) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b'{"lab": "x", "source": "/a.yaml", "status": "up", "nod', "is not valid JSON"),
        (b'["not", "a", "state"]', "is not a netlab state"),
        (b'{"lab": "x"}', "is not a netlab state (missing: fingerprint, nodes, source, status)"),
    ],
)
def test_an_unreadable_state_is_named_by_every_command(
    content: bytes, why: str, lab_file: Any, kn: Any, netlab_cli: Any
) -> None:
    lab = lab_file(SERVED)
    assert netlab_cli("up", lab.path).rc == 0
    path = kn.state_file(lab.name)
    path.write_bytes(content)
    said = f"the state file of lab {lab.name} ({path}) {why}"
    todo = f"run `netlab down {lab.name}`"
    for argv in (("check", lab.name), ("check", lab.path), ("up", lab.path), ("exec", lab.name, "a", "true")):
        rc, out, err = netlab_cli(*argv)
        assert rc == 1, (argv, out, err)
        assert said in err and todo in err, (argv, err)
        assert "Traceback" not in err
    rc, out, err = netlab_cli("status")
    assert rc == 0
    assert f"lab {lab.name} — state unreadable" in out
    assert said in err and todo in err
    rc, out, _ = netlab_cli("status", lab.name, "--json")
    (st,) = json.loads(out)["labs"]
    assert st["status"] == "state unreadable" and said in st["problem"]
    assert kn.namespaces_of(lab.name) == [lab.ns("a"), lab.ns("b")]  # none of that changed anything

    rc, out, err = netlab_cli("down", lab.name)
    assert rc == 0, err
    assert f"the state file {path} {why}" in err and "removed it, and took down what the netlab marks show" in err
    assert f"lab {lab.name} is down: removed 2 namespaces" in out
    assert kn.leftovers(lab.name) == []  # the responder too: found by its argv


def test_the_state_records_the_file_and_its_hash(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    lab = lab_file(SERVED)
    assert netlab_cli("up", lab.path).rc == 0
    st = _state(kn, lab.name)
    assert st["source"] == str(lab.path.resolve())
    assert st["source_hash"] == hashlib.sha256(lab.path.read_bytes()).hexdigest()
    assert st["spec"]["checks"][0]["name"] == "a reaches b"
    assert netlab_cli("down", lab.name).rc == 0


def test_two_files_with_one_lab_name(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    first = lab_file(SERVED)
    assert netlab_cli("up", first.path).rc == 0
    # The same lab, word for word, from another file: named, not "already up from this file".
    same = lab_file(SERVED, name=first.name, filename="same.yaml")
    rc, out, err = netlab_cli("up", same.path)
    assert rc == 1, out
    assert (
        f"lab {first.name} is already up, built from {first.path.resolve()}; {same.path.resolve()} defines "
        "a lab of the same name with the same content"
    ) in err
    assert f"Take it down first (netlab down {first.name})" in err
    other = lab_file(
        {
            **SERVED,
            "checks": [
                {"name": "other file's check", "route": {"on": "a", "get": "10.7.0.2"}, "expect": {"dev": "eth0"}}
            ],
        },
        name=first.name,
        filename="other.yaml",
    )
    rc, _, err = netlab_cli("up", other.path)
    assert rc == 1
    assert (
        f"built from {first.path.resolve()}; {other.path.resolve()} defines a lab of the same name, and it "
        "differs:" in err
    )
    assert '~ checks[0].name: "a reaches b" → "other file\'s check"' in err
    # `check LAB` runs the checks of the file the lab was built from, re-read each time.
    data = yaml.safe_load(first.path.read_text())
    data["checks"].append(
        {"name": "added after up", "route": {"on": "a", "get": "10.7.0.2"}, "expect": {"dev": "eth0"}}
    )
    first.path.write_text(yaml.safe_dump(data, sort_keys=False))
    rc, out, err = netlab_cli("check", first.name)
    assert rc == 0, out + err
    assert "a reaches b" in out and "added after up" in out and "other file's check" not in out
    rc, _, err = netlab_cli("check", other.path)
    assert rc == 2
    assert f"lab {first.name} was built from {first.path.resolve()}, not from {other.path}" in err
    assert f"netlab check {first.name}" in err
    assert netlab_cli("down", first.name).rc == 0
    assert kn.leftovers(first.name) == []


def test_a_description_change_is_listed(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    lab = lab_file({**SERVED, "description": "before"})
    assert netlab_cli("up", lab.path).rc == 0
    data = yaml.safe_load(lab.path.read_text())
    data["description"] = "after"
    lab.path.write_text(yaml.safe_dump(data, sort_keys=False))
    rc, out, err = netlab_cli("up", lab.path)
    assert rc == 0, err
    assert out == f"lab {lab.name} is up; what changed in the file needs no change in the kernel\n"
    assert _state(kn, lab.name)["spec"]["description"] == "after"
    rc, out, err = netlab_cli("check", lab.name)
    assert rc == 0 and "description" not in err, err
    assert netlab_cli("down", lab.name).rc == 0
