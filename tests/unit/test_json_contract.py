"""Every `--json` output names its schema and validates against the JSON Schema shipped
for it (netlab/schemas), errors included: exit 2 for a bad lab, exit 3 without root."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click
import pytest
from jsonschema import Draft202012Validator

from netlab import json_output
from netlab.cli import _run, cli

REPO = Path(__file__).resolve().parents[2]
BAD_LAB = "tests/golden/bad/07-missing-nodes.yaml"


def _json_of(capsys: pytest.CaptureFixture[str], command: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Runs `netlab COMMAND ARGS` as main() does; its stdout parsed and validated against COMMAND's schema."""
    code = _run([command, *args])
    doc = json.loads(capsys.readouterr().out)
    Draft202012Validator(json_output.schema(command)).validate(doc)
    assert doc["schema"] == f"netlab/{command}/v1"
    return code, doc


def test_every_shipped_schema_is_valid_draft_2020_12() -> None:
    shipped = sorted(p.name for p in (REPO / "netlab" / "schemas").iterdir())
    assert shipped == sorted(f"{c}.v1.json" for c in json_output.COMMANDS)
    for command in json_output.COMMANDS:
        schema = json_output.schema(command)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_render_json_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _json_of(capsys, "render", "--json", "labs/host-gw.yaml")
    assert code == 0 and doc["lab"]["name"] == "host-gw" and "node1" in doc["lab"]["nodes"]


def test_graph_json_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _json_of(capsys, "graph", "--format", "json", "labs/host-gw.yaml")
    assert code == 0 and doc["lab"] == "host-gw" and doc["wires"]


def test_a_bad_lab_is_an_error_document_with_its_problems(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _json_of(capsys, "render", "--json", BAD_LAB)
    assert code == 2
    error = doc["error"]
    assert error["code"] == 2 and error["message"].startswith("1 problem in the lab")
    (problem,) = error["problems"]
    assert problem["file"] == BAD_LAB and problem["line"] == 1 and problem["key"] == "nodes"
    assert "at least one node" in problem["message"]


def test_check_of_a_bad_lab_file_is_an_error_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _json_of(capsys, "check", "--json", "--up", BAD_LAB)  # the file is read before root is needed
    assert code == doc["error"]["code"] == 2
    assert doc["error"]["message"].startswith("1 problem in the lab")
    assert [(p["line"], p["key"]) for p in doc["error"]["problems"]] == [(1, "nodes")]


@pytest.mark.parametrize("command", ["status", "doctor", "check", "trace"])
def test_not_root_is_an_error_document_exit_3(capsys: pytest.CaptureFixture[str], command: str) -> None:
    args = {"check": ["docker-bridge"], "trace": ["docker-bridge", "--from", "a", "--to", "b"]}.get(command, [])
    code, doc = _json_of(capsys, command, "--json", *args)
    assert code == 3 and doc["error"]["code"] == 3 and doc["error"]["problems"] == []
    assert "root" in doc["error"]["message"]


def test_without_json_an_error_prints_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", BAD_LAB]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "07-missing-nodes.yaml" in captured.err


def test_junit_of_an_error_is_one_error_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    code = _run(["check", "--junit", str(report), "docker-bridge"])
    assert code == 3
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1" and suite.get("name") == "netlab.docker-bridge"
    (case,) = suite.iter("testcase")
    error = case.find("error")
    assert error is not None and error.get("type") == "NotRoot" and "root" in (error.get("message") or "")


def _json_options(command: click.Command) -> bool:
    """Whether `command` can print JSON: a --json flag, or --format with json among its choices."""
    for p in command.params:
        if isinstance(p, click.Option) and "--json" in p.opts:
            return True
        choices = p.type.choices if isinstance(p.type, click.Choice) else ()
        if isinstance(p, click.Option) and "--format" in p.opts and "json" in choices:
            return True
    return False


def test_every_command_that_prints_json_has_a_shipped_schema() -> None:
    """The contract covers every command with JSON output, and only those."""
    printing = sorted(name for name, command in cli.commands.items() if _json_options(command))
    assert printing == sorted(json_output.COMMANDS)


@pytest.mark.parametrize("command", json_output.COMMANDS)
def test_a_usage_error_is_the_commands_error_document(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """A mistake click finds on the command line (an unknown option) is exit 2 and, asked
    for JSON, the command's error document, as every other error is."""
    as_json = ["--format", "json"] if command == "graph" else ["--json"]
    code, doc = _json_of(capsys, command, *as_json, "--no-such-option")
    # (exec takes options it does not know as its command's: there, LAB is what is missing)
    said = "give a NODE" if command == "exec" else "--no-such-option"
    assert code == doc["error"]["code"] == 2 and said in doc["error"]["message"]


def test_validate_json_lists_every_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _json_of(capsys, "validate", "--json", "labs/docker-bridge.yaml", "labs/lvs-nat.yaml")
    assert code == 0
    assert [(f["file"], f["lab"], f["nodes"], f["interfaces"]) for f in doc["files"]] == [
        ("labs/docker-bridge.yaml", "docker-bridge", 6, 11),
        ("labs/lvs-nat.yaml", "lvs-nat", 4, 8),
    ]
    assert doc["files"][1]["variants"] == ["dnat-only", "snat-without-conntrack"]
    assert doc["files"][0]["notes"] == ["1 nftables/iptables ruleset not tried: that needs root (sudo netlab validate)"]


def test_validate_json_of_bad_files_is_one_error_with_every_files_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = "tests/golden/bad/04-empty-file.yaml"
    code, doc = _json_of(capsys, "validate", "--json", "labs/host-gw.yaml", BAD_LAB, empty)
    assert code == doc["error"]["code"] == 2
    assert doc["error"]["message"] == "2 problems in 2 lab files of 3"
    assert [(p["file"], p["key"]) for p in doc["error"]["problems"]] == [(empty, ""), (BAD_LAB, "nodes")]
