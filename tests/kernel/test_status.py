"""`netlab status` on a real lab (root): what kernel.survey reads equals what the driver
reads, link by link; `status LAB --brief` is a line per node with its counts (text and
TSV); --json carries the same counts and validates; on a terminal the table fits its
width, wrapping cells instead of cutting them; a missing namespace is said.

    gw ── br0 10.70.0.1/24 ─┬─ p1 ── a eth0 10.70.0.2/24 (serves tcp/80, udp/53; default via gw)
                            └─ p2 ── b eth0 10.70.0.3/24 (default via gw; a route to 10.99.0.0/16)
    gw eth9 ── c eth0 (no addresses; gw's eth9 set down)
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from netlab import json_output
from netlab.kernel.netlink import NetlinkDriver
from netlab.kernel.survey import Surveyed, survey
from tests.kernel.conftest import LabFactory, LabFile, NetlabCli, Registry, cli_argv, cli_env, ip_json, lab_up, run_in

SPEC: dict[str, Any] = {
    "nodes": {
        "gw": {
            "links": {
                "br0": {"kind": "bridge", "addresses": ["10.70.0.1/24", "fd70::1/64"]},
                "p1": {"peer": "a:eth0", "master": "br0"},
                "p2": {"peer": "b:eth0", "master": "br0"},
                "eth9": {"peer": "c:eth0"},
            }
        },
        "a": {
            "links": {"eth0": {"addresses": ["10.70.0.2/24"]}},
            "routes": [{"to": "default", "via": "10.70.0.1"}],
            "serve": ["tcp/80", "udp/53"],
        },
        "b": {
            "links": {"eth0": {"addresses": ["10.70.0.3/24"]}},
            "routes": [{"to": "default", "via": "10.70.0.1"}, {"to": "10.99.0.0/16", "via": "10.70.0.1"}],
        },
        "c": {},
    },
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[LabFile]:
    with lab_up(registry, tmp_path_factory.mktemp("status"), SPEC) as made:
        run_in(made.ns("gw"), "ip", "link", "set", "eth9", "down")
        yield made


def test_the_survey_reads_what_the_driver_reads(lab: LabFile) -> None:
    names = [lab.ns(node) for node in SPEC["nodes"]]
    read = survey(names, routes=True, workers=2)
    driver = NetlinkDriver()
    try:
        marks = driver.namespaces(lambda name: name in names)
        for name in names:
            assert read[name].view == driver.observe(name), name
            assert read[name].mark == marks[name] == (lab.name, name.split(".")[1])
    finally:
        driver.close()
    assert read[lab.ns("b")].routes == int(_counts(lab, "b")[1]) >= 3  # connected, default, 10.99.0.0/16
    assert survey([lab.ns("gw"), "no-such-namespace"])["no-such-namespace"] == Surveyed(None, None)


def test_brief_with_a_lab_is_a_line_per_node_with_counts(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("status", lab.name, "--brief", "--format", "tsv")
    assert r.rc == 0, r.err
    assert [line.split("\t") for line in r.out.splitlines()] == [
        ["lab", "node", "state", "interfaces", "addresses", "routes", "responders"],
        [lab.name, "gw", "down: eth9", "4", *_counts(lab, "gw"), "0"],
        [lab.name, "a", "ok", "1", *_counts(lab, "a"), "2"],
        [lab.name, "b", "ok", "1", *_counts(lab, "b"), "0"],
        [lab.name, "c", "down: eth0", "1", *_counts(lab, "c"), "0"],  # its peer is down: no carrier
    ]
    text = netlab_cli("status", lab.name, "--brief").out.splitlines()
    assert text[0].split() == ["lab", "node", "state", "interfaces", "addresses", "routes", "responders"]
    assert text[1].split() == [lab.name, "gw", "down:", "eth9", "4", *_counts(lab, "gw"), "0"]
    everyone = netlab_cli("status", "--brief").out.splitlines()  # without LAB: a line per lab
    assert everyone[0].split()[:3] == ["lab", "status", "nodes"]
    assert any(line.split()[:4] == [lab.name, "up", "4", "7"] for line in everyone), everyone


def _counts(lab: LabFile, node: str) -> list[str]:
    """The node's addresses but loopback's, and the routes `ip route show table all` lists
    outside the local table (both families), as ip(8) counts them."""
    addresses = [
        a["local"] for link in ip_json(lab.ns(node), "addr") for a in link["addr_info"] if link["ifname"] != "lo"
    ]
    listed = run_in(lab.ns(node), "sh", "-c", "ip -4 route show table all; ip -6 route show table all").stdout
    local = ("local ", "broadcast ", "multicast ", "anycast ")
    routes = [line for line in listed.splitlines() if not line.startswith(local) and "table local" not in line]
    return [str(len(addresses)), str(len(routes))]


def test_json_has_the_counts_and_validates(lab: LabFile, netlab_cli: NetlabCli) -> None:
    r = netlab_cli("status", lab.name, "--json")
    doc = json.loads(r.out)
    Draft202012Validator(json_output.schema("status")).validate(doc)
    nodes = doc["labs"][0]["nodes"]
    assert nodes["a"]["serves"] == ["tcp/80", "udp/53"] and nodes["b"]["serves"] == []
    assert {n: v["routes"] for n, v in nodes.items()} == {n: int(_counts(lab, n)[1]) for n in SPEC["nodes"]}


def _on_terminal(argv: list[str], columns: int) -> str:
    main, tty = pty.openpty()
    try:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = {k: v for k, v in cli_env().items() if k not in ("COLUMNS", "NO_COLOR")} | {"TERM": "xterm-256color"}
        proc = subprocess.Popen(argv, stdin=tty, stdout=tty, stderr=tty, env=env)
        os.close(tty)
        tty = -1
        data = b""
        while select.select([main], [], [], 60)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            data += chunk
        assert proc.wait(timeout=60) == 0, data
    finally:
        os.close(main)
        if tty >= 0:
            os.close(tty)
    return re.sub(r"\x1b\[[0-9;]*m", "", data.decode()).replace("\r\n", "\n")


def test_on_a_terminal_the_table_fits_and_nothing_is_cut(lab: LabFile) -> None:
    wide = _on_terminal(cli_argv("status", lab.name), 200)
    assert wide.splitlines()[0].startswith(f"lab {lab.name} — up — ")
    assert " gw   │ br0       │ bridge │ up " in wide and "10.70.0.1/24 fd70::1/64" in wide, wide
    narrow = _on_terminal(cli_argv("status", lab.name), 50)
    table = [line for line in narrow.splitlines() if "│" in line or "┃" in line]  # the title may fold
    assert len(table) > 8 and max(len(line.rstrip()) for line in table) <= 50 and "…" not in narrow, narrow
    addresses = "".join(line.split("│")[-1].strip() for line in table if "│" in line)
    assert "10.70.0.1/24fd70::1/64" in addresses, narrow  # folded within its column, whole


def test_a_missing_namespace_is_said(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    made = lab_file({"nodes": {"x": {}, "y": {}}})
    assert netlab_cli("up", made).rc == 0
    subprocess.run(["ip", "netns", "del", made.ns("y")], check=True)
    rows = [line.split("\t") for line in netlab_cli("status", made.name, "--brief", "--format", "tsv").out.splitlines()]
    assert rows[1:] == [
        [made.name, "x", "ok", "0", "0", "0", "0"],
        [made.name, "y", "namespace missing", "", "", "", "0"],
    ]
    brief = netlab_cli("status", "--brief", "--format", "tsv").out.splitlines()
    assert f"{made.name}\tpartial\t1/2\t0\tnone\t{made.path}" in brief, brief
