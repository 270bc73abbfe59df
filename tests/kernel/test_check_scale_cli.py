"""`netlab check` at scale on a real lab (root): four probes refused the same way are told
as one group (--verbose: each), --failures-only lists only them, --fail-fast stops
starting checks after the first failure, and --watch runs the checks again when the lab
file changes until Ctrl-C.

    client ── v2..v5 ═ eth0 ── s2..s5 (each serving tcp/80; port 81 closed)
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.kernel.conftest import LabFile, NetlabCli, Registry, lab_up

SERVERS = range(2, 6)


def _spec() -> dict[str, Any]:
    nodes: dict[str, Any] = {"client": {"links": {}}}
    checks = []
    for i in SERVERS:
        nodes["client"]["links"][f"v{i}"] = {"peer": f"s{i}:eth0", "addresses": [f"10.60.{i}.1/24"]}
        nodes[f"s{i}"] = {"links": {"eth0": {"addresses": [f"10.60.{i}.2/24"]}}, "serve": ["tcp/80"]}
        checks.append({"name": f"client reaches s{i}", "probe": {"from": "client", "to": f"10.60.{i}.2:80"}})
        checks.append({"name": f"client reaches s{i} on 81", "probe": {"from": "client", "to": f"10.60.{i}.2:81"}})
    return {"nodes": nodes, "checks": checks}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[LabFile]:
    with lab_up(registry, tmp_path_factory.mktemp("scale-cli"), _spec()) as made:
        yield made


def test_failures_the_same_way_are_one_group(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("check", lab.name)
    assert r.rc == 1, r.err
    assert "✗ 4 checks failed the same way, e.g. client reaches s2 on 81:" in r.out
    assert "    expected ok, saw refused: connection refused by 10.60.2.2:81" in r.out
    names = ", ".join(f"client reaches s{i} on 81" for i in SERVERS)
    assert f"    the 4: {names}" in r.out
    assert r.out.rstrip().splitlines()[-1].startswith(f"lab {lab.name}: 4 passed, 4 failed in ")
    verbose = netlab_cli("check", lab.name, "--verbose")
    assert "failed the same way" not in verbose.out
    assert all(f"\n✗ client reaches s{i} on 81\n" in verbose.out for i in SERVERS), verbose.out


def test_failures_only_and_json_stay_complete(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("check", lab.name, "--failures-only")
    rows = [line for line in r.out.splitlines() if line.startswith(("✓  ", "✗  "))]
    assert r.rc == 1 and len(rows) == 4 and all(row.startswith("✗") for row in rows), r.out
    doc = json.loads(netlab_cli("check", lab.name, "--json", "--failures-only").out)
    assert (doc["passed"], doc["failed"], len(doc["checks"])) == (4, 4, 8)
    assert [g["count"] for g in doc["failure_groups"]] == [4] and doc["not_run"] == []


def test_fail_fast_runs_no_check_after_the_first_failure(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("check", lab.name, "--fail-fast", "--json")
    doc = json.loads(r.out)
    assert r.rc == 1 and doc["failed"] >= 1, r.err
    assert doc["passed"] + doc["failed"] + len(doc["not_run"]) == 8
    ran = [c["name"] for c in doc["checks"]]
    assert not set(ran) & set(doc["not_run"])
    last = netlab_cli("check", lab.name, "--fail-fast").out.splitlines()[-1]
    assert re.fullmatch(rf"lab {lab.name}: \d passed, \d failed(, \d not run \(--fail-fast\))? in [\d.]+ s", last), last


def test_watch_runs_again_when_the_lab_file_changes(lab: LabFile, netlab_cli: NetlabCli) -> None:
    proc = netlab_cli.popen("check", lab.name, "--watch", "--failures-only")
    assert proc.stdout is not None and proc.stderr is not None
    original = lab.path.read_text()
    try:
        first = ""
        while f"lab {lab.name}: 4 passed, 4 failed" not in first:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            first += line
        spec = yaml.safe_load(lab.path.read_text())
        spec["checks"].append({"name": "client reaches s2 on 82", "probe": {"from": "client", "to": "10.60.2.2:82"}})
        time.sleep(0.05)  # a new mtime even on a coarse clock
        lab.path.write_text(yaml.safe_dump(spec, sort_keys=False))
        line = proc.stdout.readline()
        assert f"lab {lab.name}: 4 passed, 5 failed in " in line and line.endswith(
            "; now failing: client reaches s2 on 82\n"
        ), line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        lab.path.write_text(original)  # the other tests' checks
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "netlab: check --watch ended by SIGINT after 2 runs", err


def test_rows_for_scripts_as_tsv(lab: LabFile, netlab_cli: NetlabCli) -> None:
    """status (per interface, --brief per lab, or with LAB per node), check and doctor: a header, then one
    tab-separated line per row, the same columns whatever the width."""
    r = netlab_cli("status", lab.name, "--format", "tsv", env={"COLUMNS": "20"})
    lines = [line.split("\t") for line in r.out.splitlines()]
    assert r.rc == 0 and lines[0] == [
        "lab",
        "node",
        "interface",
        "kind",
        "state",
        "mtu",
        "master",
        "addresses",
        "netem",
    ]
    assert [lab.name, "s3", "eth0", "veth", "up", "1500", "", "10.60.3.2/24", ""] in lines[1:], r.out
    assert len(lines) == 1 + 2 * len(SERVERS)  # the client's v2..v5 and each server's eth0
    brief = netlab_cli("status", "--brief", "--format", "tsv").out.splitlines()
    assert brief[0] == "lab\tstatus\tnodes\tinterfaces\tresponders\tsource"
    assert f"{lab.name}\tup\t5\t8\t1/1 running\t{lab.path}" in brief[1:]
    nodes = netlab_cli("status", lab.name, "--brief", "--format", "tsv").out.splitlines()  # a line per node
    assert nodes[0] == "lab\tnode\tstate\tinterfaces\taddresses\troutes\tresponders"
    assert f"{lab.name}\tclient\tok\t4\t4\t4\t0" in nodes and f"{lab.name}\ts3\tok\t1\t1\t1\t1" in nodes
    text = netlab_cli("status", "--brief").out.splitlines()
    assert text[0].split() == ["lab", "status", "nodes", "interfaces", "responders", "source"]
    assert [line.split() for line in text if line.startswith(f"{lab.name} ")] == [
        [lab.name, "up", "5", "8", "1/1", "running", str(lab.path)]
    ]
    check = netlab_cli("check", lab.name, "--format", "tsv", "--failures-only")
    rows = [line.split("\t") for line in check.out.splitlines()]
    assert check.rc == 1 and rows[0] == ["result", "check", "observed", "attempts", "seconds"]
    assert sorted(row[1] for row in rows[1:]) == [f"client reaches s{i} on 81" for i in SERVERS]
    assert all(row[0] == "fail" and row[2].endswith(": refused") for row in rows[1:])
    doctor = netlab_cli("doctor", "--format", "tsv").out.splitlines()
    assert doctor[0] == "kind\tname\tok\tdetail\thint"
    assert any(line.startswith("feature\tnetns\tyes\t") for line in doctor), doctor


def test_format_json_is_json_and_conflicts_are_refused(lab: LabFile, netlab_cli: NetlabCli) -> None:
    doc = json.loads(netlab_cli("status", lab.name, "--format", "json").out)
    assert doc["schema"] == "netlab/status/v1" and doc["labs"][0]["lab"] == lab.name
    r = netlab_cli("check", lab.name, "--json", "--format", "tsv")
    assert (
        r.rc == 2 and json.loads(r.out)["error"]["message"] == "--json and --format tsv ask for two outputs; give one"
    )
