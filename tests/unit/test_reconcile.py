"""Reconcile without a kernel: the diff of two plans, the record of a plan in the state,
and applying/restoring through the fake driver."""

from __future__ import annotations

import copy
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlab.errors import Interrupted
from netlab.interrupts import Signalled
from netlab.kernel.fake import FakeDriver
from netlab.load import load_lab, load_lab_text
from netlab.plan.build import build_plan
from netlab.plan.ops import AddRoute, CreateLink, CreateNetns, DeleteNetns, Op
from netlab.plan.record import UnknownOp, ops_from_data, ops_to_data
from netlab.plan.removal import Remove
from netlab.reconcile.diff import Reconcile, reconcile
from netlab.reconcile.run import ReconcileFailed, apply_reconcile, present_after

GOLDEN = Path(__file__).parent.parent / "golden"

BASE: dict[str, Any] = {
    "name": "r",
    "nodes": {
        "host": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {
                "br0": {"kind": "bridge", "addresses": ["10.0.0.1/24"]},
                "v1": {"peer": "a:eth0", "master": "br0"},
                "v2": {"peer": "b:eth0", "master": "br0", "hairpin": True},
                "up0": {"peer": "far:eth0", "addresses": ["192.168.9.1/24"]},
                "vx0": {"kind": "vxlan", "vni": 1, "local": "192.168.9.1", "remote": "192.168.9.2", "dev": "up0"},
            },
            "fdb": [{"dev": "vx0", "lladdr": "02:00:00:00:00:02", "dst": "192.168.9.2"}],
            "routes": [{"to": "10.9.0.0/16", "via": "192.168.9.2"}],
            "rules": [{"from": "10.0.0.0/24", "table": 100}, {"to": "10.8.0.0/16", "table": 100}],
            "nftables": [{"ruleset": "table inet t {\n  chain c { type filter hook forward priority 0; }\n}\n"}],
        },
        "a": {"links": {"eth0": {"addresses": ["10.0.0.2/24"]}}, "routes": [{"to": "default", "via": "10.0.0.1"}]},
        "b": {"links": {"eth0": {"addresses": ["10.0.0.3/24"]}}, "routes": [{"to": "default", "via": "10.0.0.1"}]},
        "far": {"links": {"eth0": {"addresses": ["192.168.9.2/24"]}}},
    },
}


def _lab(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    return load_lab_text(yaml.safe_dump(data))


def _ops(data: dict[str, Any]) -> list[Op]:
    return list(build_plan(_lab(data)).ops)


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def _diff(old: dict[str, Any], new: dict[str, Any]) -> Reconcile:
    return reconcile("r", _ops(old), _ops(new), lambda _ns, key: "0")


def _add_pod(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["links"]["v3"] = {"peer": "c:eth0", "master": "br0"}
    d["nodes"]["c"] = {
        "links": {"eth0": {"addresses": ["10.0.0.4/24"]}},
        "routes": [{"to": "default", "via": "10.0.0.1"}],
    }


def _move_address(d: dict[str, Any]) -> None:
    d["nodes"]["a"]["links"]["eth0"]["addresses"] = ["10.0.0.20/24"]


def _change_route(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["routes"][0]["via"] = "192.168.9.3"


def _new_vni(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["links"]["vx0"]["vni"] = 2


def _mtu(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["links"]["v1"]["mtu"] = 1400
    d["nodes"]["a"]["links"]["eth0"]["mtu"] = 1400


def _bridge_stp(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["links"]["br0"]["stp"] = True


def _swap_ruleset(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["nftables"] = [
        {"ruleset": "table ip u {\n  chain c { type nat hook postrouting priority 100; }\n}\n"}
    ]


def _rules(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["rules"] = [{"to": "10.8.0.0/16", "table": 100}]


def _drop_pod(d: dict[str, Any]) -> None:
    del d["nodes"]["b"]
    del d["nodes"]["host"]["links"]["v2"]


def _drop_both_pods(d: dict[str, Any]) -> None:
    # br0 loses its last port: it is rebuilt (an emptied bridge has no carrier), which
    # releases v1 before a's namespace goes and takes v1 with it
    _drop_pod(d)
    del d["nodes"]["a"]
    del d["nodes"]["host"]["links"]["v1"]


def _sysctl(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["sysctls"] = {"net.ipv4.conf.all.rp_filter": 2}


EDITS = [_add_pod, _move_address, _change_route, _new_vni, _mtu, _bridge_stp, _swap_ruleset, _rules, _drop_pod, _sysctl]


def test_the_record_of_every_golden_plan_reads_back_as_the_same_ops() -> None:
    files = sorted((GOLDEN / "good").glob("*.yaml")) + sorted((GOLDEN / "expand").glob("*[!d].yaml"))
    assert len(files) > 10
    for path in files:
        ops = build_plan(load_lab(path)).ops
        back = ops_from_data(ops_to_data(ops))
        assert back == list(ops), path
        assert [op.what for op in back] == [op.what for op in ops]


def test_a_record_of_another_version_is_refused_by_name() -> None:
    with pytest.raises(UnknownOp, match="no op kind 'AddTeleport'"):
        ops_from_data([{"op": "AddTeleport", "ns": "x"}])
    with pytest.raises(UnknownOp, match="unexpected keyword"):
        ops_from_data([{"op": "AddRoute", "ns": "x", "color": "red"}])


def test_the_same_plan_needs_nothing() -> None:
    assert _diff(BASE, BASE).empty


def test_a_new_pod_is_only_made() -> None:
    rec = _diff(BASE, _edit(_add_pod))
    assert {s.sign for s in rec.steps} == {"+"}
    assert [s.op.render() for s in rec.steps][:2] == ["ip netns add r.c", "ip -n r.c link set lo up alias netlab:r:c"]
    assert "ip -n r.host link add v3 master br0 up type veth peer name eth0 netns r.c" in rec.render()


def test_a_changed_route_is_deleted_and_added() -> None:
    rec = _diff(BASE, _edit(_change_route))
    assert [s.render() for s in rec.steps] == [
        "- ip -n r.host route del 10.9.0.0/16 via 192.168.9.2  # nodes.host.routes[0]: via 192.168.9.2 → 192.168.9.3",
        "+ ip -n r.host route add 10.9.0.0/16 via 192.168.9.3  # nodes.host.routes[0]",
    ]


def test_a_new_vni_rebuilds_the_vxlan_and_what_lives_on_it() -> None:
    rec = _diff(BASE, _edit(_new_vni))
    assert rec.rebuilt == ("r.host link vx0 (nodes.host.links.vx0: vni 1 → 2 (not changeable in place))",)
    made = [s.op for s in rec.steps if s.sign == "+"]
    assert [type(op).__name__ for op in made] == ["CreateLink", "AddFdb"]
    assert isinstance(rec.steps[0].op, Remove) and rec.steps[0].op.render() == "ip -n r.host link del vx0"


def test_a_new_kind_rebuilds_the_link_and_says_so() -> None:
    bridge = _edit(lambda d: d["nodes"]["host"]["links"].update(x0={"kind": "bridge"}))
    rec = _diff(bridge, _edit(lambda d: d["nodes"]["host"]["links"].update(x0={"kind": "vxlan", "vni": 7})))
    assert rec.rebuilt == ("r.host link x0 (nodes.host.links.x0: its kind bridge → vxlan (not changeable in place))",)


def _underlay_mtu(d: dict[str, Any]) -> None:
    d["nodes"]["host"]["links"]["up0"]["mtu"] = 1400


def test_a_vxlan_is_rebuilt_when_its_devs_mtu_changes_and_after_it() -> None:
    """The kernel gives a VXLAN without an MTU its dev's (less the headers) when it is made:
    the dev's new MTU is set in its own stage (veths), before the tunnel is made again."""
    rec = _diff(BASE, _edit(_underlay_mtu))
    why = "nodes.host.links.up0: its MTU changes, and a VXLAN over it takes its MTU from it when made"
    assert rec.rebuilt == (f"r.host link vx0 ({why})",)
    labels = [label for label, _ in rec.stages()]
    assert labels.index("veths") < labels.index("tunnels"), labels
    (veths,) = [steps for label, steps in rec.stages() if label == "veths"]
    assert [s.render() for s in veths] == [
        "~ ip -n r.host link set up0 mtu 1400 up  # nodes.host.links.up0: mtu None → 1400"
    ]
    explicit = _edit(_underlay_mtu)
    explicit["nodes"]["host"]["links"]["vx0"]["mtu"] = 1300
    assert _diff(_edit(lambda d: d["nodes"]["host"]["links"]["vx0"].update(mtu=1300)), explicit).rebuilt == ()


EDITS.append(_underlay_mtu)


def test_a_bridge_that_loses_its_last_port_is_made_anew() -> None:
    """Found in the VM: an emptied bridge keeps no carrier and its old ports' tso_max_size."""

    def no_ports(d: dict[str, Any]) -> None:
        for node in ("a", "b"):
            del d["nodes"][node]
        for port in ("v1", "v2"):
            del d["nodes"]["host"]["links"][port]

    rec = _diff(BASE, _edit(no_ports))
    why = "nodes.host.links.br0: its last port goes (an emptied bridge has no carrier)"
    assert rec.rebuilt == (f"r.host link br0 ({why})",)
    assert _diff(BASE, _edit(_drop_pod)).rebuilt == ()  # one port left: it stays


def test_a_bridge_rebuilt_takes_its_address_and_its_ports_masters_and_hairpin() -> None:
    rec = _diff(BASE, _edit(_bridge_stp))
    text = rec.render()
    assert "~ ip -n r.host link set v1 master br0 up  # again: its master br0 is rebuilt" in text
    assert "+ ip -n r.host link set v2 type bridge_slave hairpin on" in text
    assert "+ ip -n r.host addr add 10.0.0.1/24 dev br0  # again: r.host link br0 is made anew" in text


def test_a_moved_address_may_take_the_ipv4_routes_through_it() -> None:
    rec = _diff(BASE, _edit(_move_address))
    lines = [s.render() for s in rec.steps]
    assert lines[0].startswith("- ip -n r.a route del default via 10.0.0.1  # the kernel may drop it")
    assert "- ip -n r.a addr del 10.0.0.2/24 dev eth0  # nodes.a.links.eth0.addresses[0]" in lines
    assert lines[-1] == "+ ip -n r.a route add default via 10.0.0.1  # again: 10.0.0.2/24 goes from eth0"


def test_a_removed_pod_is_one_namespace_deleted() -> None:
    rec = _diff(BASE, _edit(_drop_pod))
    assert [s.render() for s in rec.steps] == ["- ip netns del r.b  # nodes.b"]  # v2 goes with its far end


def test_a_swapped_ruleset_flushes_and_loads_the_firewall() -> None:
    rec = _diff(BASE, _edit(_swap_ruleset))
    assert rec.steps[0].render() == "- ip netns exec r.host nft flush ruleset  # its firewall changes"
    assert rec.steps[1].sign == "+" and "table ip u" in rec.steps[1].op.render()


def test_rules_change_from_the_first_difference_on() -> None:
    rec = _diff(BASE, _edit(_rules))
    assert [s.render() for s in rec.steps] == [
        "- ip -n r.host rule del from all to 10.8.0.0/16 lookup 100  # nodes.host.rules[1]",
        "- ip -n r.host rule del from 10.0.0.0/24 lookup 100  # nodes.host.rules[0]",
        "+ ip -n r.host rule add from all to 10.8.0.0/16 lookup 100  # nodes.host.rules[0]",
    ]


def test_a_sysctl_gone_from_the_file_goes_back_to_a_fresh_namespace_value() -> None:
    rec = _diff(BASE, _edit(_sysctl))
    assert "- ip netns exec r.host sysctl -qw net.ipv4.ip_forward=0  # nodes.host.sysctls.net.ipv4.ip_forward" in (
        rec.render()
    )


def test_changed_exec_commands_rebuild_their_node() -> None:
    old = _edit(lambda d: d["nodes"]["a"].update(exec=[["true"]]))
    new = _edit(lambda d: d["nodes"]["a"].update(exec=[["false"]]))
    rec = _diff(old, new)
    assert rec.rebuilt == ("r.a (its exec commands changed (they run once; they cannot be undone))",)
    assert any(isinstance(s.op, DeleteNetns) for s in rec.steps)
    assert "+ ip -n r.host link add v1 master br0 up type veth peer name eth0 netns r.a" in rec.render()
    appended = _edit(lambda d: d["nodes"]["a"].update(exec=[["true"], ["false"]]))
    assert [s.render() for s in _diff(old, appended).steps] == ["+ ip netns exec r.a false  # nodes.a.exec[1]"]


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
def test_every_edit_and_its_undo_from_any_point_come_back(edit: Callable[[dict[str, Any]], None]) -> None:
    """Done whole, a reconcile leaves nothing to do; cut after any step, reconciling what
    is there back into the old plan leaves the old plan (what run.py's restore relies on)."""
    old, new = _ops(BASE), _ops(_edit(edit))
    rec = reconcile("r", old, new, lambda _ns, key: "0")
    assert not rec.empty
    assert reconcile("r", present_after(old, rec.steps), new, lambda _ns, key: "0").empty
    for cut in range(len(rec.steps) + 1):
        present = present_after(old, rec.steps[:cut])
        back = reconcile("r", present, old, lambda _ns, key: "0")
        assert reconcile("r", present_after(present, back.steps), old, lambda _ns, key: "0").empty, cut


def _built(data: dict[str, Any]) -> tuple[FakeDriver, list[Op]]:
    driver = FakeDriver()
    ops = _ops(data)
    for op in ops:
        driver.apply([op], lambda _op: None)
    return driver, ops


def _links(driver: FakeDriver) -> dict[str, dict[str, tuple[str, str | None]]]:
    return {ns: {n: (link.kind, link.master) for n, link in links.items()} for ns, links in driver.links.items()}


@pytest.mark.parametrize(
    "edit", [_add_pod, _bridge_stp, _new_vni, _drop_pod, _drop_both_pods], ids=lambda e: e.__name__
)
def test_reconciled_on_the_fake_kernel_it_is_what_a_fresh_build_makes(edit: Callable[[dict[str, Any]], None]) -> None:
    driver, old = _built(BASE)
    new = _ops(_edit(edit))
    apply_reconcile(reconcile("r", old, new, lambda _ns, key: "0"), old, driver, lambda _ns, key: "0")
    fresh, _ = _built(_edit(edit))
    assert _links(driver) == _links(fresh)
    assert set(driver.netns) == set(fresh.netns)


def test_a_rebuilt_node_takes_its_veths_far_ends_with_it_at_once() -> None:
    """The kernel removes a deleted namespace's devices later: the far end of a pod's veth
    would still be in the host when the pod's veth is made again (EEXIST). The reconcile
    deletes such pairs itself first."""
    driver, old = _built(BASE)
    driver.lingering_veths = True
    rebuilt = _edit(lambda d: d["nodes"]["a"].update(exec=[["true"]]))
    rebuilt["nodes"]["a"]["exec"] = [["true"]]
    changed = _edit(lambda d: d["nodes"]["a"].update(exec=[["false"]]))
    first = _ops(rebuilt)
    apply_reconcile(reconcile("r", old, first, lambda _ns, key: "0"), old, driver, lambda _ns, key: "0")
    rec = reconcile("r", first, _ops(changed), lambda _ns, key: "0")
    assert rec.rebuilt == ("r.a (its exec commands changed (they run once; they cannot be undone))",)
    apply_reconcile(rec, first, driver, lambda _ns, key: "0")
    fresh, _ = _built(changed)
    assert _links(driver) == _links(fresh)


def test_a_refused_step_puts_the_lab_back_and_says_what_failed() -> None:
    driver, old = _built(BASE)

    def both(d: dict[str, Any]) -> None:
        _add_pod(d)
        _bridge_stp(d)

    new = _ops(_edit(both))
    before = _links(driver)

    def refuse(op: Op) -> str | None:
        return "Nexthop has invalid gateway" if isinstance(op, AddRoute) and op.ns == "r.c" else None

    driver.fail = refuse
    with pytest.raises(ReconcileFailed) as caught:
        apply_reconcile(reconcile("r", old, new, lambda _ns, key: "0"), old, driver, lambda _ns, key: "0")
    assert str(caught.value) == (
        "failed: nodes.c.routes[0] (ip -n r.c route add default via 10.0.0.1): Nexthop has invalid gateway; "
        "lab r was put back as it was"
    )
    assert caught.value.restored
    assert _links(driver) == before
    assert "r.c" not in driver.netns


def test_a_signal_half_way_puts_the_lab_back() -> None:
    driver, old = _built(BASE)
    new = _ops(_edit(_new_vni))
    before = _links(driver)

    made = [0]

    def once(op: Op) -> BaseException | None:
        if isinstance(op, CreateLink) and op.name == "vx0" and not made[0]:
            made[0] = 1
            return Signalled(signal.SIGTERM)
        return None

    driver.fail = once
    with pytest.raises(
        Interrupted, match=r"reconcile of lab r interrupted by SIGTERM at tunnels; it was put back"
    ) as e:
        apply_reconcile(reconcile("r", old, new, lambda _ns, key: "0"), old, driver, lambda _ns, key: "0")
    assert e.value.exit_code == 143
    assert _links(driver) == before
    assert not any(isinstance(op, CreateNetns) for op in driver.applied[len(old) :])


def test_an_op_kind_with_an_undo_is_taken_away_by_it_and_made_again() -> None:
    """netem (SetNetem, whose undo is DeleteNetem) needs nothing of its own in the diff."""
    old = _edit(lambda d: d["nodes"]["a"]["links"]["eth0"].update(netem={"delay": "10ms"}))
    new = _edit(lambda d: d["nodes"]["a"]["links"]["eth0"].update(netem={"delay": "20ms", "loss": "1%"}))
    assert [s.render() for s in _diff(old, new).steps] == [
        "- tc -n r.a qdisc del dev eth0 root  # nodes.a.links.eth0.netem",
        "+ tc -n r.a qdisc replace dev eth0 root netem delay 20ms loss 1%  # nodes.a.links.eth0.netem",
    ]
    assert [s.render() for s in _diff(old, BASE).steps] == [
        "- tc -n r.a qdisc del dev eth0 root  # nodes.a.links.eth0.netem"
    ]

    def rebuild_a(d: dict[str, Any]) -> None:
        d["nodes"]["a"]["links"]["eth0"].update(netem={"delay": "10ms"}, mtu=1400)
        d["nodes"]["host"]["links"]["v1"]["mtu"] = 1400

    assert "qdisc" not in _diff(old, _edit(rebuild_a)).render()  # its link stays: the netem stays


def test_responders_that_cannot_start_after_a_reconcile_put_the_lab_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every change was made, then the responders could not start: the kernel goes back
    too (not the whole lab down, as before), the old responders start again, the old
    state is written."""
    from netlab import lifecycle
    from netlab.lab.render import lab_data
    from netlab.plan.record import ops_to_data
    from netlab.probes.responders import ResponderError
    from netlab.state import LabState, read_state

    monkeypatch.setenv("NETLAB_STATE_DIR", str(tmp_path))
    serving = _edit(lambda d: d["nodes"]["a"].update(serve=["tcp/80"]))
    driver, old = _built(serving)
    built = build_plan(_lab(serving))
    nodes = dict(zip(_lab(serving).nodes, built.namespaces, strict=True))
    existing = LabState("r", str(tmp_path / "r.yaml"), built.fingerprint, "up", nodes, pids=[4242])
    existing.spec, existing.ops = lab_data(_lab(serving)), ops_to_data(old)
    started: list[int] = []

    def refuse(lab: Any, nodes: Any) -> list[int]:
        raise ResponderError("Address already in use")

    monkeypatch.setattr(lifecycle, "start_lab_responders", refuse)
    monkeypatch.setattr(lifecycle, "stop_lab_processes", lambda lab, pids: pids)

    def start_again(lab: str, services: list[Any]) -> list[int]:
        started.append(len(services))
        return [4343]

    monkeypatch.setattr(lifecycle, "_start_responders", start_again)
    new = _edit(_add_pod)
    new["nodes"]["a"]["serve"] = ["tcp/80", "tcp/81"]
    lab = _lab(new)
    with pytest.raises(ReconcileFailed) as caught:
        records = lifecycle._Records(lab_data(lab), None, {})
        lifecycle._reconcile(lab, build_plan(lab), existing, driver, None, existing.source, None, records)
    assert str(caught.value) == "failed: responders of lab r: Address already in use; lab r was put back as it was"
    fresh, _ = _built(serving)
    assert _links(driver) == _links(fresh) and set(driver.netns) == set(fresh.netns)
    assert started == [1]
    state = read_state("r")
    assert state is not None and (state.status, state.fingerprint, state.pids) == ("up", built.fingerprint, [4343])
