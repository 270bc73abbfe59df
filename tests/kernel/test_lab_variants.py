"""Lab variants on the real kernel: a lab and its variant up at the same time, each
checked with its own checks (the lab's pass with ok, the variant's expect a timeout),
through the CLI and through the pytest plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netlab.pytest_plugin import LabFactory as PluginFactory
from netlab.pytest_plugin import lab_checks
from tests.kernel.conftest import LabFactory, NetlabCli, namespaces_of

# a ── r ── b; in the variant b has no route back to a's subnet: a's SYN reaches b, but
# b's SYN-ACK has nowhere to go, so a times out.
LAB = """\
name: @LAB@
nodes:
  r:
    sysctls: {net.ipv4.ip_forward: 1}
    links:
      eth0: {peer: "a:eth0", addresses: [10.0.1.1/24]}
      eth1: {peer: "b:eth0", addresses: [10.0.2.1/24]}
  a:
    links:
      eth0: {addresses: [10.0.1.2/24]}
    routes:
      - {to: default, via: 10.0.1.1}
  b:
    serve: [tcp/80]
    links:
      eth0: {addresses: [10.0.2.2/24]}
    routes:
      - {to: default, via: 10.0.2.1}
checks:
  - name: a reaches b through r
    probe: {from: a, to: b, port: 80}
    expect: {result: ok, served_by: b, server_saw: a}
variants:
  no-return:
    description: b has no route back to a
    nodes:
      b: {routes: null}
    checks:
      - name: b's answer never comes back
        probe: {from: a, to: b, port: 80, timeout: 0.5}
        expect: {result: timeout}
"""


def _verdicts(out: str) -> list[tuple[str, bool, str]]:
    data = json.loads(out)
    return [(v["name"], v["passed"], v.get("observed", "")) for v in data["checks"]]


def test_lab_and_variant_up_side_by_side(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = lab_file(LAB)
    variant = f"{lab.name}-no-return"
    lab_file.registry.names.add(variant)  # the session's leak guard looks for it too
    lab_file.made.append(variant)  # and it is taken down after the test, pass or fail

    assert netlab_cli("up", lab).rc == 0
    r = netlab_cli("up", lab, "--variant", "no-return")
    assert r.rc == 0, r.err
    assert f"lab {variant} is up" in r.out
    assert namespaces_of(lab.name) == [f"{lab.name}.{n}" for n in ("a", "b", "r")]
    assert namespaces_of(variant) == [f"{variant}.{n}" for n in ("a", "b", "r")]

    base = netlab_cli("check", lab.name, "--json")
    assert base.rc == 0, base.out + base.err
    assert [(n, p) for n, p, _ in _verdicts(base.out)] == [("a reaches b through r", True)]
    by_name = netlab_cli("check", variant, "--json")  # by the variant lab's name: its checks
    assert by_name.rc == 0, by_name.out + by_name.err
    assert json.loads(by_name.out)["lab"] == variant
    assert [(n, p) for n, p, _ in _verdicts(by_name.out)] == [("b's answer never comes back", True)]
    by_file = netlab_cli("check", lab, "--variant", "no-return")
    assert by_file.rc == 0 and f"lab {variant}: 1 passed" in by_file.out, by_file.out + by_file.err

    st = netlab_cli("status", lab, "--variant", "no-return", "--json")
    assert st.rc == 0 and [s["lab"] for s in json.loads(st.out)["labs"]] == [variant]

    down = netlab_cli("down", variant)
    assert down.rc == 0 and f"lab {variant} is down" in down.out
    assert namespaces_of(variant) == [] and len(namespaces_of(lab.name)) == 3  # the lab itself is still up
    assert netlab_cli("down", lab).rc == 0
    assert namespaces_of(lab.name) == []


def test_check_up_builds_and_removes_only_the_variant(lab_file: LabFactory, netlab_cli: NetlabCli) -> None:
    lab = lab_file(LAB)
    variant = f"{lab.name}-no-return"
    lab_file.registry.names.add(variant)
    lab_file.made.append(variant)
    r = netlab_cli("check", "--up", lab, "--variant", "no-return")
    assert r.rc == 0, r.out + r.err
    assert f"lab {variant}: 1 passed, 0 failed" in r.out
    assert namespaces_of(variant) == [] and namespaces_of(lab.name) == []
    bad = netlab_cli("check", "--up", lab, "--variant", "no-retrun")
    assert bad.rc == 2 and "did you mean 'no-return'?" in bad.err


def test_plugin_builds_a_variant(netlab_lab: PluginFactory, tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB.replace("@LAB@", "vplug"))
    works = netlab_lab(path, unique=True)
    broken = netlab_lab(path, unique=True, variant="no-return")
    assert broken.name.startswith("vplug-no-return-") and works.name.startswith("vplug-")
    assert works.probe("a", "b:80").ok
    assert broken.probe("a", "b:80", timeout=0.5).outcome == "timeout"
    assert [v.passed for v in broken.run_checks()] == [True]
    assert [c.name for c in broken.model.checks] == ["b's answer never comes back"]


def test_plugin_builds_a_variant_of_a_dict(netlab_lab: PluginFactory) -> None:
    import yaml

    spec: dict[str, Any] = yaml.safe_load(LAB.replace("@LAB@", "vdict"))
    lab = netlab_lab(spec, unique=True, variant="no-return")
    assert lab.name.startswith("vdict-no-return-") and lab.model.nodes["b"].routes == []
    assert lab.probe("a", "b:80", timeout=0.5).outcome == "timeout"


_FILE = Path(__file__).resolve().parents[1] / "data" / "variants-tiny.yaml"

# The lab's checks and its variant's, one test each, in the same module (two labs).
test_tiny = lab_checks(_FILE, unique=True)
test_tiny_no_return = lab_checks(_FILE, unique=True, variant="no-return")
