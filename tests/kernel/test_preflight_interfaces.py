"""The firewall preflight tries a node's rulesets in a throwaway namespace that holds a
stand-in for each interface the node declares, so a ruleset naming one (`meta oif veth0`,
which needs the name to resolve to an ifindex as it loads) is valid exactly when the node
has it — whatever its kind, even one this kernel cannot make (a VRF) — and an interface
the node does not declare is still refused at the ruleset's line of the lab file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from netlab.errors import LabError
from netlab.load import load_lab_located
from netlab.preflight import check_firewall

LAB = """\
name: @LAB@
nodes:
  r:
    links:
      veth0: {peer: "c:eth0", addresses: [10.0.0.1/24]}
      blue: {kind: vrf, table: 10}
    sysctls: {net.ipv4.ip_forward: 1}
    nftables: |
      table ip nat {
        chain post {
          type nat hook postrouting priority srcnat;
          meta oif veth0 masquerade
          meta oif blue counter
          meta oif @IFACE@ counter
        }
      }
  c:
    links:
      eth0: {addresses: [10.0.0.2/24]}
"""


def _lab(tmp_path: Path, iface: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB.replace("@LAB@", "standins").replace("@IFACE@", iface))
    return path


def _netns() -> list[str]:
    return sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []


def test_a_ruleset_naming_the_nodes_interfaces_loads(tmp_path: Path) -> None:
    before = _netns()
    lab, where = load_lab_located(_lab(tmp_path, "lo"))
    check_firewall(lab, where)  # raises on a refusal
    assert _netns() == before, "the trial namespace (and its stand-ins) must leave nothing named"


def test_an_interface_the_node_lacks_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _lab(tmp_path, "eth0")  # c's interface, not r's
    lab, where = load_lab_located(path)
    with pytest.raises(LabError) as info:
        check_firewall(lab, where)
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.path) == (str(path), 14, "nodes.r.nftables[0].ruleset"), problem
    assert problem.message.startswith("line 6 of the ruleset: Error: Interface does not exist"), problem


def test_up_builds_it_and_masquerades(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    """Through the CLI: validate (root) accepts it, and the lab comes up with the rule in
    (a bridge for the VRF: this kernel may have no VRF)."""
    lab = lab_file(LAB.replace("@IFACE@", "lo").replace("{kind: vrf, table: 10}", "{kind: bridge}"))
    assert netlab_cli("validate", lab).rc == 0
    result = netlab_cli("up", lab)  # lab_file takes it down afterwards
    assert result.rc == 0, result
    listed = netlab_cli("exec", lab.name, "r", "--", "nft", "list", "chain", "ip", "nat", "post")
    assert 'oif "veth0" masquerade' in listed.out, listed


def test_validate_names_the_interface_problem_once_per_node(tmp_path: Path) -> None:
    """Nodes with the same rules but different interfaces are tried apart (the cache of
    trials knows the interfaces)."""
    (tmp_path / "lab.yaml").write_text(
        textwrap.dedent("""\
        name: standins2
        nodes:
          a:
            links: {veth0: {peer: "b:veth1"}}
            nftables: ["table ip t { chain c { type filter hook output priority 0; oif veth0 accept; }; }"]
          b:
            nftables: ["table ip t { chain c { type filter hook output priority 0; oif veth0 accept; }; }"]
        """)
    )
    lab, where = load_lab_located(tmp_path / "lab.yaml")
    with pytest.raises(LabError) as info:
        check_firewall(lab, where)
    assert [(p.path, "Interface does not exist" in p.message) for p in info.value.problems] == [
        ("nodes.b.nftables[0].ruleset", True)
    ], info.value


VARIANTS = """\
name: @LAB@
nodes:
  r:
    links:
      veth0: {peer: "c:eth0", addresses: [10.0.0.1/24]}
    nftables: ["table ip t { chain c { type filter hook output priority 0; oif veth0 accept; }; }"]
  c:
    links:
      eth0: {addresses: [10.0.0.2/24]}
variants:
  renamed:
    nodes:
      r: {links: {veth0: null, veth9: {peer: "c:eth0", addresses: [10.0.0.1/24]}}}
  fine:
    nodes:
      c: {links: {eth0: {mtu: 1400}}}
"""


def test_a_variant_refused_by_the_preflight_blocks_only_itself(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    """Variant `renamed` drops veth0, which the base's ruleset (kept) names: validate says
    so, naming the variant, at the base's line; `up` of the base and of `fine` go ahead,
    and `up --variant renamed` is refused alone."""
    lab = lab_file(VARIANTS)
    checked = netlab_cli("validate", lab)
    assert checked.rc == 2, checked
    assert checked.err.startswith(
        "1 problem in the lab:\n"
        f"  {lab}:6: nodes.r.nftables[0].ruleset: in variant renamed: line 1 of the "
        "ruleset: Error: Interface does not exist"
    ), checked.err
    refused = netlab_cli("up", lab, "--variant", "renamed")
    assert refused.rc == 2 and "in variant renamed: line 1 of the ruleset" in refused.err, refused
    assert kn.namespaces_of(f"{lab.name}-renamed") == []
    assert netlab_cli("up", lab).rc == 0
    assert netlab_cli("up", lab, "--variant", "fine").rc == 0
    assert netlab_cli("down", f"{lab.name}-fine").rc == 0
