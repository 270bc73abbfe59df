"""nftables rulesets and iptables dumps on the real kernel, each in its node's namespace.

A client → router → server lab where the router's ruleset DNATs a VIP to the server and
masquerades what it sends there: real probes show the server answering the VIP and seeing
the router (not the client), and the router's conntrack shows the DNAT — over IPv4 and
IPv6, from nft syntax, libnftables JSON and a `file:`. A drop rule makes the probe time
out. A ruleset nft refuses is bad input: `netlab up` exits 2 with the lab-file line and
leaves no namespace behind; `netlab validate` (root) says the same.

Every lab is built by the pytest plugin (unique names, taken down pass or fail); each
failure message carries `nft list ruleset` of the router, the kernel's own view.
"""

from __future__ import annotations

import copy
import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from netlab.errors import LabError
from netlab.kernel.nft import list_ruleset
from netlab.load import load_lab_located
from netlab.preflight import check_firewall
from netlab.pytest_plugin import LabFactory, LabHandle

VIP4, VIP6 = "203.0.113.10", "2001:db8:99::10"

NAT4 = """\
table inet lab {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 203.0.113.10 tcp dport 80 dnat ip to 10.1.0.2:8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth1" masquerade
  }
}
"""

NAT6 = """\
table ip6 lab6 {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr 2001:db8:99::10 tcp dport 80 dnat to [2001:db8:2::2]:8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth1" masquerade
  }
}
"""


def spec(nftables: Any = None, iptables: Any = None) -> dict[str, Any]:
    """client (10.0.0.2, 2001:db8:1::2) — router — server (10.1.0.2, 2001:db8:2::2, tcp/8080).
    The server has no route back to the client's subnets: only a masqueraded flow gets
    its answer back."""
    router: dict[str, Any] = {
        "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1},
        "links": {
            "eth0": {"peer": "client:eth0", "addresses": ["10.0.0.1/24", "2001:db8:1::1/64"]},
            "eth1": {"peer": "server:eth0", "addresses": ["10.1.0.1/24", "2001:db8:2::1/64"]},
        },
    }
    if nftables is not None:
        router["nftables"] = nftables
    if iptables is not None:
        router["iptables"] = iptables
    return {
        "name": "nft",
        "nodes": {
            "router": router,
            "client": {
                "links": {"eth0": {"addresses": ["10.0.0.2/24", "2001:db8:1::2/64"]}},
                "routes": [{"to": "default", "via": "10.0.0.1"}, {"to": "default", "via": "2001:db8:1::1"}],
            },
            "server": {
                "links": {"eth0": {"addresses": ["10.1.0.2/24", "2001:db8:2::2/64"]}},
                "serve": ["tcp/8080"],
            },
        },
    }


def evidence(lab: LabHandle, node: str = "router") -> str:
    return f"\n--- nft list ruleset in {lab.ns(node)}:\n{list_ruleset(lab.ns(node))}"


def assert_dnat_and_masquerade(lab: LabHandle, vip: str) -> None:
    r = lab.probe("client", vip, port=80, timeout=2.0)
    why = f"{r.outcome}: {r.detail}{evidence(lab)}"
    assert r.ok, why
    assert r.served_by == "server", why
    router_side = "10.1.0.1" if ":" not in vip else "2001:db8:2::1"
    assert r.server_saw == router_side, f"the server saw {r.server_saw}, not the router (masquerade){why}"
    entries = lab.conntrack("router", r)
    assert entries, f"no conntrack entry for the probe on the router{why}"
    ct = entries[0]
    assert ct.dnat and ct.snat, f"conntrack: {ct.text}{why}"
    server = "10.1.0.2" if ":" not in vip else "2001:db8:2::2"
    assert (ct.orig.dst, ct.reply.src, ct.reply.sport) == (vip, server, 8080), f"conntrack: {ct.text}{why}"


# ---------------------------------------------------------------- traffic through the rulesets


def test_inet_ruleset_dnats_a_vip_and_masquerades(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(spec(nftables=NAT4), unique=True)
    assert_dnat_and_masquerade(lab, VIP4)
    assert "dnat ip to 10.1.0.2:8080" in list_ruleset(lab.ns("router"))


def test_ip6_ruleset_dnats_over_ipv6(netlab_lab: LabFactory) -> None:
    lab = netlab_lab(spec(nftables=[{"ruleset": NAT6}]), unique=True)
    assert_dnat_and_masquerade(lab, VIP6)


def test_json_ruleset(netlab_lab: LabFactory) -> None:
    """The same NAT as libnftables JSON (what `nft -j list ruleset` prints, here as YAML)."""
    nat = {
        "nftables": [
            {"add": {"table": {"family": "ip", "name": "lab"}}},
            {
                "add": {
                    "chain": {
                        "family": "ip",
                        "table": "lab",
                        "name": "pre",
                        "type": "nat",
                        "hook": "prerouting",
                        "prio": -100,
                        "policy": "accept",
                    }
                }
            },
            {
                "add": {
                    "chain": {
                        "family": "ip",
                        "table": "lab",
                        "name": "post",
                        "type": "nat",
                        "hook": "postrouting",
                        "prio": 100,
                        "policy": "accept",
                    }
                }
            },
            {
                "add": {
                    "rule": {
                        "family": "ip",
                        "table": "lab",
                        "chain": "pre",
                        "expr": [
                            {
                                "match": {
                                    "op": "==",
                                    "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                                    "right": VIP4,
                                }
                            },
                            {
                                "match": {
                                    "op": "==",
                                    "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                    "right": 80,
                                }
                            },
                            {"dnat": {"addr": "10.1.0.2", "port": 8080}},
                        ],
                    }
                }
            },
            {
                "add": {
                    "rule": {
                        "family": "ip",
                        "table": "lab",
                        "chain": "post",
                        "expr": [
                            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth1"}},
                            {"masquerade": None},
                        ],
                    }
                }
            },
        ]
    }
    lab = netlab_lab(spec(nftables=[{"json": nat}]), unique=True)
    assert_dnat_and_masquerade(lab, VIP4)


def test_file_ruleset(netlab_lab: LabFactory, tmp_path: Path) -> None:
    (tmp_path / "router.nft").write_text("#!/usr/sbin/nft -f\nflush ruleset\n" + NAT4)
    lab = netlab_lab(spec(nftables=[{"file": str(tmp_path / "router.nft")}]), unique=True)
    assert_dnat_and_masquerade(lab, VIP4)


def test_later_ruleset_builds_on_an_earlier_one_and_iptables(netlab_lab: LabFactory) -> None:
    """Rulesets apply in order (the second adds to the first's table); an iptables dump
    (iptables-nft) goes in after them, next to them in the same nf_tables."""
    nftables = ["table inet lab {\n}\n", NAT4.replace("table inet lab {", "table inet lab {\n  chain extra {\n  }")]
    iptables = [{"save": "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"}]
    lab = netlab_lab(spec(nftables=nftables, iptables=iptables), unique=True)
    assert_dnat_and_masquerade(lab, VIP4)
    ruleset = list_ruleset(lab.ns("router"))
    assert "chain extra" in ruleset and "table ip filter" in ruleset and "ct state invalid" in ruleset, ruleset


def test_filter_drop_makes_the_probe_time_out(netlab_lab: LabFactory) -> None:
    drop = NAT4.replace(
        "  chain postrouting {",
        "  chain forward {\n    type filter hook forward priority filter;\n"
        "    tcp dport 8080 drop\n  }\n  chain postrouting {",
    )
    lab = netlab_lab(spec(nftables=drop), unique=True)
    r = lab.probe("client", VIP4, port=80, timeout=0.5)
    assert r.outcome == "timeout", f"{r.outcome}: {r.detail}{evidence(lab)}"


# ---------------------------------------------------------------- bad rulesets: exit 2, nothing created


BAD = """\
name: @LAB@
nodes:
  router:
    links:
      eth0: {peer: "client:eth0", addresses: [10.0.0.1/24]}
    nftables:
      - ruleset: |
          table inet lab {
            chain prerouting {
              type nat hook prerouting priority dstnat;
              ip daddr 203.0.113.10 tcp dport 80 dnat ip to
            }
          }
  client:
    links:
      eth0: {addresses: [10.0.0.2/24]}
"""


def test_syntax_error_is_bad_input_and_nothing_is_created(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    lab = lab_file(BAD)
    result = netlab_cli("up", lab)
    assert result.rc == 2, result
    assert f"{lab}:11: nodes.router.nftables[0].ruleset: line 4 of the ruleset: Error: syntax error" in result.err, (
        result.err
    )
    assert "problem in the lab:" in result.err
    assert kn.namespaces_of(lab.name) == [], "the preflight must not leave the lab's namespaces"
    assert not kn.state_file(lab.name).exists()
    # validate (as root) tries the rulesets too, and says the same
    checked = netlab_cli("validate", lab)
    assert checked.rc == 2 and f"{lab}:11: nodes.router.nftables[0].ruleset: line 4" in checked.err, checked


def test_kernel_refusal_of_a_later_ruleset_names_its_line(
    lab_file: Any, netlab_cli: Any, kn: Any, tmp_path: Path
) -> None:
    """Dry-run needs what a ruleset refers to: the first ruleset's table is really made in
    the throwaway namespace, so only the second one's missing chain is reported — in
    its file, at its line."""
    (tmp_path / "second.nft").write_text("add rule inet lab prerouting counter\n\nadd rule inet lab nosuch counter\n")
    text = BAD.replace("dnat ip to\n", "dnat ip to 10.0.0.2\n")
    text = text.replace("  client:", "      - file: second.nft\n  client:")
    lab = lab_file(text)
    result = netlab_cli("up", lab)
    assert result.rc == 2, result
    assert (
        f"{lab}:14: nodes.router.nftables[1].file: {tmp_path}/second.nft:3: Error: Could not process rule: "
        "No such file or directory" in result.err
    ), result.err
    assert kn.namespaces_of(lab.name) == []


def test_preflight_maps_every_kind_of_entry(tmp_path: Path) -> None:
    """check_firewall itself, on a lab of several broken nodes: each problem at its line."""
    (tmp_path / "bad.nft").write_text("table ip t {\n\tchain c {\n\t\tfoo bar\n\t}\n}\n")
    (tmp_path / "lab.yaml").write_text(
        textwrap.dedent("""\
        name: preflight
        nodes:
          a:
            nftables: |
              table ip t {
                chain c { jump nosuch; }
              }
          b:
            nftables: [{file: bad.nft}]
          c:
            nftables:
              - json:
                  nftables:
                    - add: {table: {family: inet, name: x}}
                    - add: {rule: {family: inet, table: x, chain: nosuch, expr: [{counter: null}]}}
          d:
            iptables:
              - save: |
                  *nat
                  :PREROUTING ACCEPT [0:0]
                  -A PREROUTING -p tcp --dprot 80 -j ACCEPT
                  COMMIT
          e:
            iptables:
              - {family: 6, save: "*filter\\n:INPUT ACCEPT [0:0]\\n-A INPUT -j NOSUCH\\nCOMMIT\\n"}
          ok:
            nftables: [{ruleset: "table ip fine {}"}]
        """)
    )
    lab, where = load_lab_located(tmp_path / "lab.yaml")
    with pytest.raises(LabError) as info:
        check_firewall(lab, where)
    got = {(p.line, p.path): p.message for p in info.value.problems}
    f = str(tmp_path / "lab.yaml")
    assert {p.file for p in info.value.problems} == {f}
    assert sorted(got) == [
        (6, "nodes.a.nftables[0].ruleset"),
        (9, "nodes.b.nftables[0].file"),
        (15, "nodes.c.nftables[0].json.nftables[1]"),
        (21, "nodes.d.iptables[0].save"),
        (25, "nodes.e.iptables[0].save"),
    ], info.value
    assert got[(6, "nodes.a.nftables[0].ruleset")].startswith("line 2 of the ruleset: Error: Could not process rule")
    assert got[(9, "nodes.b.nftables[0].file")].startswith(f"{tmp_path}/bad.nft:3: Error: ")
    assert got[(21, "nodes.d.iptables[0].save")].startswith('line 3 of the dump: unknown option "--dprot"')
    assert "Chain 'NOSUCH' does not exist" in got[(25, "nodes.e.iptables[0].save")]


def test_preflight_changes_nothing_on_the_machine(tmp_path: Path, kn: Any) -> None:
    """The trial namespaces are unnamed and gone afterwards; no lab namespace appears."""
    import os

    (tmp_path / "lab.yaml").write_text(
        'name: trial-only\nnodes:\n  a:\n    nftables: ["table inet t {}"]\n    iptables: "*nat\\nCOMMIT\\n"\n'
    )
    before_ns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    lab, where = load_lab_located(tmp_path / "lab.yaml")
    check_firewall(lab, where)
    after_ns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    assert before_ns == after_ns


def test_shorthand_and_renamed_labs_keep_their_files(netlab_lab: LabFactory, tmp_path: Path) -> None:
    """A lab file with a relative `file:`, built under another name (the plugin writes a
    renamed copy elsewhere): the file is still found."""
    (tmp_path / "nat.nft").write_text(NAT4)
    data = copy.deepcopy(spec(nftables=[{"file": "nat.nft"}]))
    (tmp_path / "lab.yaml").write_text(json.dumps(data))  # JSON is YAML
    lab = netlab_lab(tmp_path / "lab.yaml", unique=True)
    assert_dnat_and_masquerade(lab, VIP4)


def test_driver_reports_a_refused_ruleset_with_its_line(netlab_lab: LabFactory) -> None:
    """What the build says if the kernel refuses a ruleset anyway (the preflight catches
    these first): OpFailed names the op and nft's words with the line; later ops of the
    namespace are not tried."""
    from netlab.kernel.driver import OpFailed
    from netlab.kernel.netlink import NetlinkDriver
    from netlab.plan.ops import LoadNftables, Op, RestoreIptables

    lab = netlab_lab(spec(nftables=NAT4), unique=True)
    ns = lab.ns("router")
    bad = LoadNftables(ns, "nodes.router.nftables[9]", text="table inet x {\n}\nadd rule inet x nosuch counter\n")
    later = RestoreIptables(ns, "nodes.router.iptables[0]", text="*nat\nCOMMIT\n")
    done: list[Op] = []
    driver = NetlinkDriver()
    try:
        with pytest.raises(OpFailed) as info:
            driver.apply([bad, later], done.append)
    finally:
        driver.close()
    assert info.value.op == bad and done == []
    assert info.value.reason.startswith("line 3: Error: Could not process rule: No such file or directory"), (
        info.value.reason
    )
    assert str(info.value).startswith(f"ip netns exec {ns} nft -f - <<'EOF' (table inet x {{ … 3 lines)")
    ruleset = list_ruleset(ns)
    assert "table inet x" not in ruleset and "table ip nat" not in ruleset  # all or nothing; not tried


def test_a_changed_ruleset_file_is_a_changed_lab(lab_file: Any, netlab_cli: Any, tmp_path: Path) -> None:
    """The file's text is part of the lab: `up` again after editing it loads the new ruleset."""
    (tmp_path / "r.nft").write_text("table inet lab {\n  chain c {\n  }\n}\n")
    lab = lab_file({"nodes": {"r": {"nftables": [{"file": "r.nft"}]}}})
    first = netlab_cli("up", lab)
    assert first.rc == 0, first
    assert netlab_cli("up", lab).rc == 0  # unchanged: nothing to do
    (tmp_path / "r.nft").write_text("table inet lab {\n  chain c {\n    counter\n  }\n}\n")
    again = netlab_cli("up", lab)
    assert again.rc == 0, again
    assert "reconciled in place: 1 made, 0 changed, 1 taken away" in again.out, again.out
    listed = subprocess.run(
        ["ip", "netns", "exec", lab.ns("r"), "nft", "list", "ruleset"], capture_output=True, text=True, check=True
    )
    assert "counter packets 0 bytes 0" in listed.stdout, listed
