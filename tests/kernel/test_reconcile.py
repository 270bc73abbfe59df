"""Reconcile on the real kernel: a running lab (a variant of a file with a host-gw cluster,
a NodePort service in kube-proxy's iptables mode, a gateway with an ipset and an nftables
ruleset) is changed edit after edit with `netlab up FILE` (pods added and removed, an
address moved, a route changed, a ruleset swapped, replicas scaled, network policies added
and changed, kube-proxy switched to nftables mode and its Endpoints changed, the variant
switched), and after every edit what the kernel shows (tests/kernel/kernel_view.py) is what
a fresh build of the same file shows. A reconcile that fails half-way (an `exec:` command
that fails, after every other change was made) leaves the lab as it was before it; so does
SIGINT or SIGTERM at any moment of it. `up --dry-run` on the running lab prints the
reconcile with its reasons and what it rebuilds (a link's kind, a VXLAN's VNI), `up
--replace` builds the lab anew, and `status` says which version of the file runs."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from netlab.json_output import schema
from tests.kernel.conftest import cli_env
from tests.kernel.interrupting import Outcome, interrupt, interrupt_when
from tests.kernel.kernel_view import differences, view

RULESET = "table inet gw {\n  chain filt { type filter hook forward priority 0; policy accept; counter; }\n}\n"
BASE: dict[str, Any] = {
    "cluster": {
        "backend": "host-gw",
        "nodes": {"node1": {}, "node2": {}},
        "pods": {
            "web": {"replicas": 2, "labels": {"app": "web"}, "serve": ["tcp/8080"]},
            "client": {"node": "node1"},
        },
        "services": {
            "web": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "target_port": 8080, "node_port": 30080}],
            }
        },
    },
    "nodes": {
        "gw": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "links": {
                "eth0": {"peer": "ext:eth0", "addresses": ["10.50.0.1/24"]},
                "dum0": {"kind": "bridge", "addresses": ["10.60.0.1/24"]},
            },
            "ipsets": [{"name": "allowed", "type": "hash:ip", "members": ["10.50.0.2"]}],
            "nftables": [{"ruleset": RULESET}],
        },
        "ext": {
            "links": {"eth0": {"addresses": ["10.50.0.2/24"]}},
            "routes": [{"to": "10.60.0.0/24", "via": "10.50.0.1"}],
        },
    },
    "variants": {"v": {"nodes": {"gw": {"links": {"dum0": {"mtu": 1400}}}}}},
}


def _add_pod(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["extra"] = {"node": "node2", "labels": {"app": "extra"}}


def _remove_pod(d: dict[str, Any]) -> None:
    del d["cluster"]["pods"]["client"]


def _move_address(d: dict[str, Any]) -> None:
    d["nodes"]["gw"]["links"]["dum0"]["addresses"] = []
    d["nodes"]["gw"]["links"]["eth0"]["addresses"].append("10.60.0.1/24")


def _change_route(d: dict[str, Any]) -> None:
    d["nodes"]["ext"]["routes"] = [{"to": "10.61.0.0/24", "via": "10.50.0.1"}]


def _swap_ruleset(d: dict[str, Any]) -> None:
    d["nodes"]["gw"]["nftables"] = [{"ruleset": RULESET.replace("inet gw", "ip gw2").replace("accept", "drop")}]
    d["nodes"]["gw"]["ipsets"][0]["members"] = ["10.50.0.2", "10.50.0.9"]


def _scale(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["web"]["replicas"] = 3


def _add_policy(d: dict[str, Any]) -> None:
    d["cluster"]["policies"] = {
        "web-from-extra": {"pod_selector": {"app": "web"}, "ingress": [{"from": [{"pod_selector": {"app": "extra"}}]}]}
    }


def _change_policy(d: dict[str, Any]) -> None:
    d["cluster"]["policies"]["web-from-extra"]["ingress"][0]["ports"] = [{"port": 8080}]
    d["cluster"]["policies"]["extra-egress"] = {
        "pod_selector": {"app": "extra"},
        "policy_types": ["egress"],
        "egress": [{"to": [{"pod_selector": {"app": "web"}}]}],
    }


def _nftables_mode(d: dict[str, Any]) -> None:
    d["cluster"]["proxy_mode"] = "nftables"  # kube-proxy's rules written anew, in the other mode


def _scale_down(d: dict[str, Any]) -> None:
    d["cluster"]["pods"]["web"]["replicas"] = 2  # an Endpoints change in nftables mode


def _switch_variant(d: dict[str, Any]) -> None:
    d["variants"]["v"] = {"nodes": {"gw": {"links": {"dum0": {"mtu": 1300, "up": False}}}}}


EDITS: list[Callable[[dict[str, Any]], None]] = [
    _add_pod,
    _remove_pod,
    _move_address,
    _change_route,
    _swap_ruleset,
    _scale,
    _add_policy,
    _change_policy,
    _nftables_mode,
    _scale_down,
    _switch_variant,
]


# ---------------------------------------------------------------- the tests


def _write(lab: Any, data: dict[str, Any]) -> None:
    lab.path.write_text(yaml.safe_dump({"name": lab.name, **data}, sort_keys=False))


def test_a_sequence_of_edits_reconciles_to_what_a_fresh_build_makes(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    data = copy.deepcopy(BASE)
    lab = lab_file(data)
    fresh = lab_file(data, filename="fresh.yaml")
    for made in (lab, fresh):
        lab_file.registry.names.add(f"{made.name}-v")
        lab_file.made.append(f"{made.name}-v")
    first = netlab_cli("up", lab.path, "--variant", "v")
    assert first.rc == 0, first
    for edit in EDITS:
        edit(data)
        _write(lab, data)
        _write(fresh, data)
        done = netlab_cli("up", lab.path, "--variant", "v")
        assert done.rc == 0 and "reconciled in place" in done.out, (edit.__name__, done)
        built = netlab_cli("up", fresh.path, "--variant", "v")
        assert built.rc == 0, (edit.__name__, built)
        try:
            found = differences(view(f"{lab.name}-v"), view(f"{fresh.name}-v"))
        finally:
            assert netlab_cli("down", fresh.path, "--variant", "v").rc == 0
        assert found == [], (edit.__name__, done.out, found[:10])
    status = netlab_cli("status", f"{lab.name}-v")
    assert f"reconciled {len(EDITS)}×" in status.out, status


def test_a_failed_reconcile_leaves_the_lab_as_it_was(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    data = copy.deepcopy(BASE)
    del data["variants"]
    lab = lab_file(data)
    assert netlab_cli("up", lab.path).rc == 0
    before = view(lab.name)
    for edit in (_add_pod, _move_address, _change_route, _swap_ruleset, _scale):
        edit(data)
    data["nodes"]["ext"]["exec"] = [["sh", "-c", "echo refused >&2; exit 3"]]
    _write(lab, data)
    failed = netlab_cli("up", lab.path)
    assert failed.rc == 1, failed
    assert failed.err.strip() == (
        f"netlab: failed: nodes.ext.exec[0] (ip netns exec {lab.ns('ext')} sh -c 'echo refused >&2; exit 3'): "
        f"exit status 3: refused; lab {lab.name} was put back as it was"
    ), failed.err
    assert differences(view(lab.name), before) == []
    state = json.loads((kn.state_file(lab.name)).read_text())
    assert state["status"] == "up" and state["reconciles"] == 0


# ---------------------------------------------------------------- the plan, rebuilds, --replace, versions

KINDS: dict[str, Any] = {
    "nodes": {
        "a": {
            "links": {
                "eth0": {"peer": "b:eth0", "addresses": ["10.9.0.1/24"]},
                "vx0": {"kind": "vxlan", "vni": 10, "local": "10.9.0.1", "dev": "eth0", "port": 4789},
                "x0": {"kind": "bridge", "addresses": ["10.11.0.1/24"]},
            },
            "routes": [{"to": "10.20.0.0/16", "via": "10.9.0.2"}],
        },
        "b": {"links": {"eth0": {"addresses": ["10.9.0.2/24"]}}},
    }
}


def _kinds_changed() -> dict[str, Any]:
    d = copy.deepcopy(KINDS)
    links = d["nodes"]["a"]["links"]
    links["eth0"]["mtu"] = 1400
    links["vx0"]["vni"] = 20  # a VXLAN's VNI cannot change in place
    links["vx0"]["addresses"] = ["10.10.0.1/24"]
    links["x0"] = {"kind": "vxlan", "vni": 30, "local": "10.9.0.1", "dev": "eth0", "port": 4790}  # nor a kind
    links["x0"]["addresses"] = ["10.11.0.1/24"]
    d["nodes"]["a"]["routes"] = [{"to": "10.21.0.0/16", "via": "10.9.0.2"}]
    return d


def _netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino  # the namespace's own inode (nsfs), new when it is made anew


def test_dry_run_on_a_running_lab_prints_the_reconcile_and_what_is_rebuilt(
    lab_file: Any, netlab_cli: Any, kn: Any
) -> None:
    lab = lab_file(KINDS)
    assert netlab_cli("up", lab.path).rc == 0
    _write(lab, _kinds_changed())
    before = view(lab.name)
    dry = netlab_cli("up", "--dry-run", lab.path)
    assert dry.rc == 0, dry
    a = lab.ns("a")
    for line in (
        f"# lab {lab.name} is up from {lab.path.resolve()} (sha256 ",
        f"# reconcile lab {lab.name}: 5 to make, 1 to change, 3 to take away",
        f"# rebuilt: {a} link x0 (nodes.a.links.x0: its kind bridge → vxlan (not changeable in place))",
        f"# rebuilt: {a} link vx0 (nodes.a.links.vx0: vni 10 → 20 (not changeable in place))",
        f"- ip -n {a} route del 10.20.0.0/16 via 10.9.0.2  # nodes.a.routes[0]",
        f"- ip -n {a} link del vx0  # rebuilt: nodes.a.links.vx0: vni 10 → 20 (not changeable in place)",
        f"- ip -n {a} link del x0  # rebuilt: nodes.a.links.x0: its kind bridge → vxlan (not changeable in place)",
        f"+ ip -n {a} link add vx0 up type vxlan id 20 dstport 4789 local 10.9.0.1 dev eth0  # again: rebuilt: "
        "nodes.a.links.vx0: vni 10 → 20 (not changeable in place)",
        f"~ ip -n {a} link set eth0 mtu 1400 up  # nodes.a.links.eth0: mtu None → 1400",
        f"+ ip -n {a} addr add 10.11.0.1/24 dev x0  # again: {a} link x0 is made anew",
        f"+ ip -n {a} route add 10.21.0.0/16 via 10.9.0.2  # nodes.a.routes[0]",
    ):
        assert any(got.startswith(line) for got in dry.out.splitlines()), (line, dry.out)
    assert differences(view(lab.name), before) == []  # a dry run changes nothing
    done = netlab_cli("up", lab.path)
    assert done.rc == 0, done
    assert done.out.splitlines()[1:] == [
        f"  rebuilt {a} link x0 (nodes.a.links.x0: its kind bridge → vxlan (not changeable in place))",
        f"  rebuilt {a} link vx0 (nodes.a.links.vx0: vni 10 → 20 (not changeable in place))",
    ], done.out
    fresh = lab_file(_kinds_changed(), filename="fresh.yaml")
    assert netlab_cli("up", fresh.path).rc == 0
    try:
        assert differences(view(lab.name), view(fresh.name)) == []
    finally:
        assert netlab_cli("down", fresh.name).rc == 0


def test_up_replace_rebuilds_the_whole_lab(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    lab = lab_file(KINDS)
    assert netlab_cli("up", lab.path).rc == 0
    _write(lab, _kinds_changed())
    assert netlab_cli("up", lab.path).rc == 0  # reconciled once
    reconciled, inode = view(lab.name), _netns_inode(lab.ns("b"))
    again = netlab_cli("up", "--replace", lab.path)
    assert again.rc == 0, again
    assert again.out.startswith(f"lab {lab.name} is up (it was up: taken down and built again): 2 nodes, "), again
    assert _netns_inode(lab.ns("b")) != inode  # b had nothing to change: made anew all the same
    assert differences(view(lab.name), reconciled) == []
    state = json.loads(kn.state_file(lab.name).read_text())
    assert state["reconciles"] == 0 and state["status"] == "up"


def test_status_says_which_version_of_the_file_runs(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    lab = lab_file(KINDS)
    assert netlab_cli("up", lab.path).rc == 0

    def version() -> dict[str, Any]:
        r = netlab_cli("status", lab.name, "--json")
        assert r.rc == 0, r
        doc = json.loads(r.out)
        Draft202012Validator(schema("status")).validate(doc)
        (only,) = doc["labs"]
        return dict(only["version"])

    built = hashlib.sha256(lab.path.read_bytes()).hexdigest()
    assert version() == {
        "source_hash": built,
        "file_changed": False,
        "variant": None,
        "reconciles": 0,
        "updated": None,
    }
    _write(lab, _kinds_changed())
    assert version()["file_changed"] is True
    text = netlab_cli("status", lab.name)
    assert f"version: file sha256 {built[:12]}, the file has changed since: `netlab up FILE` reconciles" in text.out
    assert netlab_cli("up", lab.path).rc == 0
    now = version()
    assert now["source_hash"] == hashlib.sha256(lab.path.read_bytes()).hexdigest() != built
    assert (now["file_changed"], now["reconciles"]) == (False, 1) and now["updated"], now
    text = netlab_cli("status", lab.name)
    assert f"version: file sha256 {now['source_hash'][:12]}, reconciled 1× (last {now['updated']})" in text.out


# ---------------------------------------------------------------- Ctrl-C, SIGTERM

SLOW = 1.0  # the edited file's last step, `exec: sleep`, keeps the reconcile going this long


def _edited_with_a_slow_step() -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    del data["variants"]
    for edit in (_add_pod, _move_address, _change_route, _swap_ruleset, _scale):
        edit(data)
    data["nodes"]["ext"]["exec"] = [["sleep", str(SLOW)]]
    return data


def _lab_as_it_was(name: str, state_before: dict[str, Any], kn: Any) -> list[str]:
    state = json.loads(kn.state_file(name).read_text())
    keys = ("status", "fingerprint", "reconciles", "source_hash", "ops")
    return [f"state {k} changed" for k in keys if state.get(k) != state_before.get(k)]


@pytest.mark.parametrize(
    ("sig", "delay"),
    [
        pytest.param(sig, random.Random(f"reconcile/{sig.name}/{i}").uniform(0.0, 1.2 + SLOW), id=f"{sig.name}-{i}")
        for sig in (signal.SIGINT, signal.SIGTERM)
        for i in range(4)
    ],
)
def test_a_signal_at_any_moment_of_a_reconcile_leaves_the_lab_as_it_was_or_reconciled(
    sig: signal.Signals, delay: float, lab_file: Any, netlab_cli: Any, kn: Any
) -> None:
    """Interrupted while it loads, changes the kernel or waits for its last step, `up`
    ends with one line and exit 128 + signal, and the lab is exactly as before; a signal
    after it reported success leaves it reconciled (exit 0)."""
    data = copy.deepcopy(BASE)
    del data["variants"]
    lab = lab_file(data)
    assert netlab_cli("up", lab.path).rc == 0
    before, state_before = view(lab.name), json.loads(kn.state_file(lab.name).read_text())
    _write(lab, _edited_with_a_slow_step())
    rc, out, err = interrupt(kn.cli_argv("up", lab.path), sig, delay, cli_env())
    outcome = Outcome("up", sig, delay, rc, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 128 + sig:
        assert len(lines) == 1 and lines[0].startswith("netlab: ") and f"by {sig.name}" in lines[0], str(outcome)
        assert "was put back as it was" in lines[0] or "nothing was changed" in lines[0], str(outcome)
        assert differences(view(lab.name), before) == [], str(outcome)
        assert _lab_as_it_was(lab.name, state_before, kn) == [], str(outcome)
        assert not [p for p in _pids(lab.ns("ext"))], "the interrupted exec command still runs"
    else:
        assert rc == 0 and "reconciled in place" in out, str(outcome)
        assert json.loads(kn.state_file(lab.name).read_text())["reconciles"] == 1


def test_ctrl_c_while_the_reconcile_changes_the_kernel_puts_the_lab_back(
    lab_file: Any, netlab_cli: Any, kn: Any
) -> None:
    """SIGINT once every change but the last step was made (the slow `exec:` runs)."""
    data = copy.deepcopy(BASE)
    del data["variants"]
    lab = lab_file(data)
    assert netlab_cli("up", lab.path).rc == 0
    before, state_before = view(lab.name), json.loads(kn.state_file(lab.name).read_text())
    edited = _edited_with_a_slow_step()
    edited["nodes"]["ext"]["exec"] = [["sleep", "30"]]
    _write(lab, edited)
    rc, out, err = interrupt_when(
        kn.cli_argv("up", lab.path), signal.SIGINT, lambda: bool(_pids(lab.ns("ext"))), cli_env()
    )
    assert rc == 130, (out, err)
    assert err.strip() == (
        f"netlab: reconcile of lab {lab.name} interrupted by SIGINT at commands; it was put back as it was"
    ), err
    assert differences(view(lab.name), before) == []
    assert _lab_as_it_was(lab.name, state_before, kn) == []
    assert _pids(lab.ns("ext")) == []
    del edited["nodes"]["ext"]["exec"]
    _write(lab, edited)
    assert netlab_cli("up", lab.path).rc == 0  # and it reconciles afterwards


def _pids(ns: str) -> list[str]:
    """Processes in the namespace (`exec:` commands; the lab's responders serve elsewhere)."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout
    return out.split()


# ---------------------------------------------------------------- an unchanged file (netlab.unchanged)


def test_up_of_an_unchanged_file_is_told_from_what_it_was_built_from(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    """`up` of the same file again is answered from the state, without loading it (no
    pipeline imported); an edit of a file the lab reads (a ruleset's `file:`) is not taken
    for "unchanged": it is reconciled, and then the new version is told apart again."""
    timing = {"NETLAB_TIMING": "1"}
    spec = {"nodes": {"gw": {"nftables": [{"file": "gw.nft"}]}}}
    lab = lab_file(spec)
    rules = lab.path.parent / "gw.nft"
    rules.write_text("table inet gw {\n  chain one { type filter hook forward priority 0; }\n}\n")
    assert netlab_cli("up", lab.path).rc == 0
    again = netlab_cli("up", lab.path, env=timing)
    assert (again.rc, again.out) == (0, f"lab {lab.name} is already up from this file; nothing changed\n"), again
    assert "an unchanged file?" in again.err and "import the pipeline" not in again.err, again.err

    rules.write_text("table inet gw {\n  chain two { type filter hook forward priority 0; }\n}\n")
    changed = netlab_cli("up", lab.path, env=timing)
    assert changed.rc == 0 and "reconciled in place" in changed.out, changed
    assert "import the pipeline" in changed.err, changed.err
    ruleset = subprocess.run(
        ["ip", "netns", "exec", lab.ns("gw"), "nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout
    assert "chain two" in ruleset and "chain one" not in ruleset, ruleset
    last = netlab_cli("up", lab.path, env=timing)
    assert "already up from this file" in last.out and "import the pipeline" not in last.err, last

    # a state an older netlab wrote records no inputs: the full way finds the lab up from
    # this file and records them, so the next `up` is told from them again
    state = kn.state_file(lab.name)
    data = json.loads(state.read_text())
    del data["inputs"]
    state.write_text(json.dumps(data))
    older = netlab_cli("up", lab.path, env=timing)
    assert "already up from this file" in older.out and "import the pipeline" in older.err, older
    assert json.loads(state.read_text()).get("inputs"), "the inputs were not recorded"
    then = netlab_cli("up", lab.path, env=timing)
    assert "already up from this file" in then.out and "import the pipeline" not in then.err, then
