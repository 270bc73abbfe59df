"""The JSON contract on a real lab (root): every command that prints JSON, run for real,
names its schema and validates against the JSON Schema shipped for it, its success and
its errors alike (tests/unit/test_json_contract.py holds the list of those commands to
the CLI's options, and covers what needs no lab).

    client eth0 10.71.0.1/24 ═ eth0 server 10.71.0.2/24 (serves tcp/80)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from netlab import json_output
from tests.kernel.conftest import REPO, LabFile, NetlabCli, Registry, lab_up

SPEC: dict[str, Any] = {
    "nodes": {
        "client": {"links": {"eth0": {"peer": "server:eth0", "addresses": ["10.71.0.1/24"]}}},
        "server": {"links": {"eth0": {"addresses": ["10.71.0.2/24"]}}, "serve": ["tcp/80"]},
    },
    "checks": [{"name": "client reaches server", "probe": {"from": "client", "to": "server", "port": 80}}],
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[LabFile]:
    with lab_up(registry, tmp_path_factory.mktemp("json"), SPEC) as made:
        yield made


def _valid(netlab_cli: NetlabCli, command: str, *args: Any, nobody: bool = False) -> tuple[int, dict[str, Any]]:
    """`netlab COMMAND ARGS`: its exit code and its stdout, one JSON document that names
    COMMAND's schema and validates against it."""
    r = netlab_cli(command, *args, nobody=nobody)
    doc = json.loads(r.out)
    assert doc["schema"] == f"netlab/{command}/v1", r.out
    Draft202012Validator(json_output.schema(command)).validate(doc)
    if "error" in doc:
        assert doc["error"]["code"] == r.rc != 0 and doc["error"]["message"], r.out
    return r.rc, doc


def test_every_command_that_prints_json_is_covered_here() -> None:
    covered = {"status", "check", "doctor", "render", "graph", "trace", "exec", "impair", "link", "validate"}
    assert covered == set(json_output.COMMANDS)


def test_status_and_check(lab: LabFile, netlab_cli: NetlabCli) -> None:
    assert _valid(netlab_cli, "status", lab.name, "--json")[0] == 0
    assert _valid(netlab_cli, "status", lab.name, "--brief", "--format", "json")[0] == 0
    code, doc = _valid(netlab_cli, "status", f"{lab.name}-nope", "--json")
    assert code == 2 and "is not up" in doc["error"]["message"]
    code, doc = _valid(netlab_cli, "check", lab.name, "--json")
    assert code == 0 and doc["passed"] == 1
    code, doc = _valid(netlab_cli, "check", lab.name, "--json", "--only", "no such check")
    assert code == 2 and "no such check" in doc["error"]["message"]


def test_validate_render_graph_and_doctor(lab: LabFile, netlab_cli: NetlabCli) -> None:
    code, doc = _valid(netlab_cli, "validate", "--json", lab.path)  # as root: rulesets and sysctls tried too
    assert code == 0 and doc["files"][0]["lab"] == lab.name and doc["files"][0]["notes"] == []
    code, doc = _valid(netlab_cli, "validate", "--json", lab.path, REPO / "tests/golden/bad/07-missing-nodes.yaml")
    assert code == 2 and doc["error"]["message"] == "1 problem in 1 lab file of 2"
    assert _valid(netlab_cli, "render", lab.path, "--json")[0] == 0
    code, doc = _valid(netlab_cli, "graph", lab.name, "--format", "json")  # a lab that is up
    assert code == 0 and doc["lab"] == lab.name
    code, doc = _valid(netlab_cli, "graph", f"{lab.name}-nope", "--format", "json")
    assert code == 2 and f"no lab '{lab.name}-nope' up" in doc["error"]["message"]
    code, doc = _valid(netlab_cli, "doctor", "--json")  # 3 is its answer when a feature is missing
    assert code in (0, 3) and "error" not in doc and doc["features"]
    code, doc = _valid(netlab_cli, "doctor", "--json", nobody=True)
    assert code == 3 and "root" in doc["error"]["message"]


def test_trace_and_exec(lab: LabFile, netlab_cli: NetlabCli) -> None:
    code, doc = _valid(netlab_cli, "trace", lab.name, "--from", "client", "--to", "server:80", "--json")
    assert code == 0, doc
    code, doc = _valid(netlab_cli, "trace", lab.name, "--from", "nobody", "--to", "server:80", "--json")
    assert code == 2 and "has no node 'nobody'" in doc["error"]["message"]
    code, doc = _valid(netlab_cli, "exec", lab.name, "--all", "--json", "--", "true")
    assert code == 0 and [n["node"] for n in doc["nodes"]] == ["client", "server"]
    code, doc = _valid(netlab_cli, "exec", lab.name, "client", "--json", "--", "no-such-command-here")
    assert code == 127 and "command not found" in doc["error"]["message"]


def test_link_and_impair(lab: LabFile, netlab_cli: NetlabCli) -> None:
    code, doc = _valid(netlab_cli, "link", lab.name, "client:eth0", "down", "--json")
    assert code == 0 and doc["changed"] and not doc["after"]["up"]
    code, doc = _valid(netlab_cli, "link", lab.name, "client:eth0", "up", "--json")
    assert code == 0 and doc["after"]["up"]
    code, doc = _valid(netlab_cli, "link", lab.name, "client:eth7", "down", "--json")
    assert code == 2 and "eth7" in doc["error"]["message"]
    # Without sch_netem (this machine's kernel) the answer is the error, exit 3; with it, the change.
    code, doc = _valid(netlab_cli, "impair", lab.name, "client:eth0", "--delay", "5ms", "--json")
    assert (code, "error" in doc) in ((0, False), (3, True)), doc
    if code == 0:
        assert _valid(netlab_cli, "impair", lab.name, "client:eth0", "--clear", "--json")[0] == 0
    code, doc = _valid(netlab_cli, "impair", lab.name, "client:eth0", "--delay", "soon", "--json")
    assert code == 2 and "soon" in doc["error"]["message"]
