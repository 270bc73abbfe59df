"""Multihost without hosts: the inventory, placement, the split into sub-labs with their
tunnels and MTUs, and `up --dry-run --hosts` (rootless).

Golden cases are tests/golden/multihost/CASE.hosts.yaml (+ CASE.yaml, else
labs/flannel-vxlan.yaml) → CASE.err or CASE.plan; regenerate with NETLAB_REGEN_GOLDEN=1
and read `git diff tests/golden/multihost`."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from netlab.cli import cli
from netlab.errors import LabError, NetlabError, UsageError
from netlab.kernel import encode
from netlab.kernel.nlsock import decode_rtnl, frame
from netlab.lab.model import Vxlan
from netlab.lab.render import render_yaml
from netlab.load import load_lab, load_lab_located, load_lab_text
from netlab.multihost.inventory import DEFAULT_TUNNEL_PORT, load_inventory
from netlab.multihost.lifecycle import load_split
from netlab.multihost.placement import place
from netlab.multihost.render import render_split
from netlab.multihost.split import OVERHEAD, vni_block
from netlab.plan.build import build_plan
from netlab.plan.ops import CreateLink, VxlanType

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "multihost"
CASES = sorted(p.name.removesuffix(".hosts.yaml") for p in GOLDEN.glob("*.hosts.yaml"))
REGEN = os.environ.get("NETLAB_REGEN_GOLDEN") == "1"
FLANNEL = "labs/flannel-vxlan.yaml"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _outcome(case: str) -> tuple[str, str]:
    lab = GOLDEN / f"{case}.yaml"
    hosts = (GOLDEN / f"{case}.hosts.yaml").relative_to(REPO).as_posix()
    try:
        inventory, split = load_split(lab.relative_to(REPO).as_posix() if lab.exists() else FLANNEL, None, hosts)
    except NetlabError as e:
        assert e.exit_code == 2, e
        return "err", f"{e}\n"
    return "plan", render_split(split, inventory)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    kind, text = _outcome(case)
    golden = GOLDEN / f"{case}.{kind}"
    if REGEN:
        golden.write_text(text, encoding="utf-8")
    other = GOLDEN / f"{case}.{'plan' if kind == 'err' else 'err'}"
    assert not other.exists(), f"{case} now gives a {kind}, but {other.name} expects otherwise"
    assert golden.exists(), f"{golden.name} is missing; run with NETLAB_REGEN_GOLDEN=1 and review it"
    assert text == golden.read_text(encoding="utf-8")


def test_no_orphan_golden_files() -> None:
    made = {p.name.split(".")[0] for p in GOLDEN.glob("*.err")} | {p.name.split(".")[0] for p in GOLDEN.glob("*.plan")}
    assert made <= set(CASES)


def _inventory(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hosts.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


TWO = """
    all:
      vars: {netlab_mtu: 9000}
      hosts:
        a: {ansible_host: 192.0.2.1}
        b: {ansible_host: 192.0.2.2}
"""


# ---------------------------------------------------------------- inventory


def test_inventory_merges_vars_as_ansible_does(tmp_path: Path) -> None:
    inventory = load_inventory(
        _inventory(
            tmp_path,
            """
            all:
              vars: {ansible_user: deploy, netlab_mtu: 9000, ansible_ssh_common_args: "-F /x/ssh_config -o A=b"}
              hosts:
                a:
              children:
                lab:
                  vars: {ansible_user: root, netlab_command: /opt/netlab/bin/netlab}
                  hosts:
                    b: {ansible_host: 192.0.2.2, ansible_port: "2222", netlab_address: 198.51.100.2}
                    a: {ansible_host: 192.0.2.1, ansible_ssh_private_key_file: ~/k, netlab_mtu: 1500}
            """,
        )
    )
    a, b = inventory.hosts
    assert (a.name, a.ssh_host, a.tunnel_address, a.user, a.mtu) == ("a", "192.0.2.1", "192.0.2.1", "root", 1500)
    assert a.key_file == os.path.expanduser("~/k") and a.netlab == "/opt/netlab/bin/netlab"
    assert a.ssh_args == ("-F", "/x/ssh_config", "-o", "A=b")
    assert (b.ssh_host, b.tunnel_address, b.port, b.mtu) == ("192.0.2.2", "198.51.100.2", 2222, 9000)
    assert inventory.tunnel_port == DEFAULT_TUNNEL_PORT not in (4789, 8472)


def test_a_host_name_that_does_not_resolve_needs_netlab_address(tmp_path: Path) -> None:
    with pytest.raises(LabError) as info:
        load_inventory(_inventory(tmp_path, "all:\n  hosts:\n    a: {ansible_host: no-such-host.invalid}\n"))
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (3, "all.hosts.a.ansible_host")
    assert "does not resolve; give netlab_address" in problem.message


def test_missing_inventory_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such inventory file"):
        load_inventory(str(tmp_path / "nope.yaml"))


# ---------------------------------------------------------------- placement


def test_automatic_placement_is_balanced_and_keeps_pods_with_their_node(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, TWO))
    lab, origin = load_lab_located(FLANNEL)
    placement = place(lab, origin, inventory)
    assert placement.nodes_on("a") == ["underlay", "node1", "pod1", "pod2"]
    assert placement.nodes_on("b") == ["node2", "pod3", "pod4"]
    assert not placement.pinned
    assert place(lab, origin, inventory) == placement  # deterministic


def test_pinning_a_cluster_node_takes_its_pods(tmp_path: Path) -> None:
    lab, origin = load_lab_located(GOLDEN / "pinned.yaml")
    three = load_inventory(str(GOLDEN / "pinned.hosts.yaml"))
    placement = place(lab, origin, three)
    assert placement.nodes_on("c") == ["node1", "pod1"] and placement.pinned == {"node1", "pod1"}
    with pytest.raises(LabError) as info:
        place(lab, origin, load_inventory(_inventory(tmp_path, TWO)))
    (problem,) = info.value.problems
    assert problem.path == "cluster.nodes.node1.host" and problem.line == 6
    assert "no host 'c' in the inventory" in problem.message


# ---------------------------------------------------------------- split


def test_each_sub_lab_loads_and_plans_on_its_host(tmp_path: Path) -> None:
    _, split = load_split(FLANNEL, None, _inventory(tmp_path, TWO))
    (tunnel,) = split.tunnels
    assert [(e.host, e.node, e.ifname, e.mtu) for e in tunnel.ends] == [
        ("a", "underlay", "node2", 1500),
        ("b", "node2", "eth0", 1500),
    ]
    assert tunnel.vni // 4096 == vni_block("flannel-vxlan") and tunnel.capacity == 9000 - OVERHEAD[4]
    for host, sub in split.sub_labs.items():
        again = load_lab_text(render_yaml(sub, f"host {host}"), f"{host}.yaml")  # what the host reads
        assert again == sub and not again.checks
        assert build_plan(again).namespaces == tuple(f"flannel-vxlan.{n}" for n in split.placement.nodes_on(host))
    eth0 = split.sub_labs["b"].nodes["node2"].links["eth0"]
    assert isinstance(eth0, Vxlan)
    assert (eth0.local, eth0.remote, eth0.port, eth0.underlay, eth0.learning) == (
        "192.0.2.2",
        "192.0.2.1",
        DEFAULT_TUNNEL_PORT,
        "host",
        False,
    )
    assert eth0.addresses == ["192.168.49.3/24"] and next(iter(split.sub_labs["b"].nodes["node2"].links)) == "eth0"
    port = split.sub_labs["a"].nodes["underlay"].links["node2"]
    assert isinstance(port, Vxlan) and port.vni == eth0.vni and (port.local, port.remote) == ("192.0.2.1", "192.0.2.2")


def test_a_tunnel_end_without_mtu_gets_what_fits(tmp_path: Path) -> None:
    lab = tmp_path / "wire.yaml"
    lab.write_text("name: wire\nnodes:\n  x: {host: a, links: {eth0: {peer: 'y:eth0'}}}\n  y: {host: b}\n")
    hosts = _inventory(tmp_path, TWO.replace("netlab_mtu: 9000", "netlab_mtu: 1400"))
    _, split = load_split(str(lab), None, hosts)
    (tunnel,) = split.tunnels
    assert [e.mtu for e in tunnel.ends] == [1350, 1350] and tunnel.capacity == 1350


def test_host_underlay_vxlan_renders_as_made_from_the_host() -> None:
    lab = load_lab_text(
        "name: t\nnodes:\n  x:\n    links:\n      eth0: {kind: vxlan, vni: 7, port: 4792, local: 192.0.2.1,"
        " remote: 192.0.2.2, underlay: host, mtu: 1450}\n"
    )
    (op,) = [op for op in build_plan(lab).ops if "vxlan" in op.render()]
    assert op.render() == (
        "ip link add eth0 netns t.x mtu 1450 up type vxlan id 7 dstport 4792 local 192.0.2.1 remote 192.0.2.2"
    )


def test_host_underlay_needs_remote_and_no_dev() -> None:
    with pytest.raises(LabError) as info:
        load_lab_text(
            "name: t\nnodes:\n  x:\n    links:\n      eth0: {kind: vxlan, vni: 7, underlay: host}\n", "t.yaml"
        )
    (problem,) = info.value.problems
    assert problem.path == "nodes.x.links.eth0.underlay" and "needs `remote:`" in problem.message


def test_host_is_ignored_without_hosts() -> None:
    lab = load_lab(GOLDEN / "pinned.yaml")
    assert lab.nodes["node1"].host == "c"
    assert build_plan(lab).namespaces[0] == "pinned.underlay"


# ---------------------------------------------------------------- CLI


def test_up_dry_run_with_hosts_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETLAB_HOSTS", _inventory(tmp_path, TWO))
    result = CliRunner().invoke(cli, ["up", "--dry-run", FLANNEL], standalone_mode=False)
    assert result.return_value == 0, result.output
    assert "#   b (192.0.2.2): node2, pod3, pod4" in result.output
    assert "ip link add eth0 netns flannel-vxlan.node2 mtu 1500 up type vxlan" in result.output


def test_up_dry_run_refusal_exits_2(tmp_path: Path) -> None:
    hosts = _inventory(tmp_path, TWO.replace("netlab_mtu: 9000", "netlab_mtu: 1500"))
    result = CliRunner().invoke(cli, ["up", "--dry-run", "--hosts", hosts, FLANNEL], standalone_mode=False)
    assert isinstance(result.exception, LabError) and result.exception.exit_code == 2
    assert "cluster.underlay.mtu: 1500 does not fit" in str(result.exception)


def test_host_underlay_vxlan_is_sent_with_the_node_namespace_fd() -> None:
    def op(host: bool) -> CreateLink:
        vx = VxlanType(vni=7, port=4792, local="192.0.2.1", remote="192.0.2.2", learning=False, host_underlay=host)
        return CreateLink("t.x", name="eth0", type=vx, mtu=1450)

    def made(host: bool) -> Any:
        body = encode.create_link(op(host), lambda name: 1, {"t.x": 9}.__getitem__)
        return decode_rtnl(frame(body, encode.RTM_NEWLINK, 0, 0))

    assert made(True).get_attr("IFLA_NET_NS_FD") == 9 and encode.from_host(op(True))
    assert made(False).get_attr("IFLA_NET_NS_FD") is None
    assert not encode.from_host(op(False))


def test_the_lab_check_up_built_over_hosts_is_taken_down_whatever_signal_lands_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal while `check --up --hosts` takes down what it built waits for the down on
    every host (here: the hosts' down, faked) and is answered after it."""
    import signal

    from netlab.multihost import checks, lifecycle
    from netlab.multihost.engine import HostsDown

    downs: list[str] = []

    def down_with_a_signal(lab: str, _inventory: object) -> HostsDown:
        signal.raise_signal(signal.SIGINT)  # pytest's handler: KeyboardInterrupt, once it may
        downs.append(lab)
        return HostsDown(lab, [])

    monkeypatch.setattr(lifecycle, "down", down_with_a_signal)
    where = checks.OverHosts("lab.yaml", None, "hosts.yaml")
    with pytest.raises(KeyboardInterrupt):
        checks._take_down("mh", None, where)  # type: ignore[arg-type]
    assert downs == ["mh"]
