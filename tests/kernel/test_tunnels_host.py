"""Tunnels, VLANs and VLAN-filtering bridges on this host's kernel, which has none of them
(no modules; a bridge without CONFIG_BRIDGE_VLAN_FILTERING): a lab that uses one (or only
names a fallback device of one) is refused before anything exists, with the VM hint. The
devices themselves are tested in tests/vm/test_tunnels.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netlab.kernel.features import probe_features

LABS = {
    "ipip": """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.1.0.1/24]}
      t0: {kind: ipip, remote: 10.1.0.2}
  b:
    links:
      eth0: {addresses: [10.1.0.2/24]}
""",
    "vlan": """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.1.0.1/24]}
      eth0.7: {kind: vlan, dev: eth0, id: 7}
  b:
    links:
      eth0: {addresses: [10.1.0.2/24]}
""",
    "bridge_vlan": """\
name: @LAB@
nodes:
  a:
    links:
      br0: {kind: bridge, vlan_filtering: true}
      eth0: {peer: "b:eth0", master: br0, vlans: {pvid: 10}}
  b:
    links:
      eth0: {addresses: [10.1.0.2/24]}
""",
    "gre": """\
name: @LAB@
nodes:
  a:
    sysctls: {net.ipv4.conf.gre0.rp_filter: 0}
    links:
      gre0: {kind: gre, mtu: 1476}
""",
}


@pytest.mark.parametrize("kind", sorted(LABS))
def test_a_lab_with_a_tunnel_needs_its_module(kind: str, netlab_cli: Any, lab_file: Any) -> None:
    """The kind is a feature whether or not `requires:` lists it: exit 3 before anything exists."""
    if probe_features([kind])[0].ok:
        pytest.skip(f"this kernel has {kind} (the VM?); the test needs one without it")
    lab = lab_file(LABS[kind])
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err and f"  {kind}: " in r.err, r.err
    why = "this kernel's bridges filter no VLANs" if kind == "bridge_vlan" else f"link kind '{kind}' unknown"
    assert why in r.err, r.err
    assert "netlab vm run" in r.err, r.err
    assert not list(Path("/run/netns").glob(f"{lab.name}.*"))


def test_a_running_lab_changed_to_use_a_missing_kind_is_refused(netlab_cli: Any, lab_file: Any, kn: Any) -> None:
    """The running lab's features were probed when it was built (so `up` forks no probe
    ahead); the one the edit adds is probed then, and missing: exit 3, nothing changed."""
    if probe_features(["ipip"])[0].ok:
        pytest.skip("this kernel has ipip (the VM?); the test needs one without it")
    plain = LABS["ipip"].replace("      t0: {kind: ipip, remote: 10.1.0.2}\n", "")
    lab = lab_file(plain)
    assert netlab_cli("up", lab).rc == 0
    before = kn.state_file(lab.name).read_text()
    lab.path.write_text(LABS["ipip"].replace("@LAB@", lab.name))
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err and "  ipip: " in r.err, r.err
    assert kn.state_file(lab.name).read_text() == before
    assert "t0" not in kn.links(lab.ns("a"))
