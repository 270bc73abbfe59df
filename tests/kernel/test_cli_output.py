"""`netlab check` with its output into a pipe: each check's line is whole, whatever
$COLUMNS says, so `netlab check LAB | grep 'not SNATed'` finds the check."""

from __future__ import annotations

import pytest

from tests.kernel.conftest import LabFactory, NetlabCli

LONG = "b answers on tcp/80 from a, not SNATed on its way, the long name of a check people grep for"


@pytest.mark.parametrize("columns", ["20", "80"])
def test_piped_check_lines_are_whole(lab_file: LabFactory, netlab_cli: NetlabCli, columns: str) -> None:
    lab = lab_file(
        {
            "nodes": {
                "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.3.0.1/24"]}}},
                "b": {"serve": ["tcp/80"], "links": {"eth0": {"addresses": ["10.3.0.2/24"]}}},
            },
            "checks": [
                {"name": LONG, "probe": {"from": "a", "to": "10.3.0.2:80"}},
                {"name": f"{LONG} (closed port)", "probe": {"from": "a", "to": "10.3.0.2:81"}},
            ],
        }
    )
    r = netlab_cli("check", "--up", lab, env={"COLUMNS": columns})
    assert r.rc == 1, r.out + r.err
    lines = r.out.splitlines()
    assert [line for line in lines if line.startswith("✓ ") and line.split("  ")[1].strip() == LONG], r.out
    assert [line for line in lines if line.startswith("✗ ") and f"{LONG} (closed port)" in line], r.out
    assert f"✗ {LONG} (closed port)" in lines
    assert "\x1b[" not in r.out
