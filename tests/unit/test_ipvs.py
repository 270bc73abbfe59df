"""IPVS without a kernel: the `ipvs:` lab objects, their plan (the exact ipvsadm lines),
the generic netlink messages, the readers' parsing, the `ipvs:` expectation's judge, and
`netlab render` round trips. (tests/vm/test_ipvs.py runs them on a kernel with IPVS.)"""

from __future__ import annotations

import socket
import struct
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.generic.ipvs import IPVS_CMD_NEW_DEST, IPVS_CMD_NEW_SERVICE, ipvsmsg

from netlab.errors import LabError
from netlab.kernel.fake import FakeDriver
from netlab.kernel.ipvs import (
    _explain,
    _parse_real,
    _parse_service,
    parse_conn_table,
    real_message,
    service_message,
)
from netlab.lab.checks import IpvsExpect, ProbeCheck
from netlab.lab.expect import Expect
from netlab.lab.ipvs import check_sysctl, needs_ipvs
from netlab.lab.model import Lab
from netlab.lab.render import render_yaml
from netlab.load import load_lab, load_lab_text
from netlab.observations import IpvsConn, IpvsRealView, IpvsServiceView, IpvsState, table_text
from netlab.plan.build import build_plan
from netlab.plan.ops import STAGES, AddIpvsReal, AddIpvsService, stage_of
from netlab.probes.flow import ProbeResult
from netlab.probes.ipvs_flow import ipvs_flow, ipvs_forward
from netlab.probes.judge import judge_ipvs

REPO = Path(__file__).resolve().parents[2]

HEAD = """
name: lb
nodes:
  client:
    links:
      eth0: {peer: "director:eth1", addresses: [192.0.2.2/24, "2001:db8:1::2/64"]}
  director:
    links:
      lo: {addresses: [192.0.2.100/32, "2001:db8:100::100/128"]}
      eth1: {addresses: [192.0.2.1/24, "2001:db8:1::1/64"]}
"""


def lab(ipvs: str, extra: str = "") -> Lab:
    text = HEAD + "    ipvs:\n" + textwrap.indent(textwrap.dedent(ipvs).strip("\n"), "      ") + "\n" + extra
    return load_lab_text(text.lstrip("\n"), "t.yaml")


def ipvsadm(ipvs: str) -> list[str]:
    """The plan's IPVS lines without `ip netns exec lb.director`."""
    prefix = "ip netns exec lb.director "
    lines = [op.render() for op in build_plan(lab(ipvs)).ops if isinstance(op, (AddIpvsService, AddIpvsReal))]
    assert all(line.startswith(prefix) for line in lines), lines
    return [line.removeprefix(prefix) for line in lines]


# ---------------------------------------------------------------- the lab file


def test_defaults_are_ipvsadm_s() -> None:
    svc = lab("- {address: 192.0.2.100, port: 80, reals: [{address: 10.1.0.11}]}").nodes["director"].ipvs[0]
    assert (svc.proto, svc.scheduler, svc.persistent, svc.netmask, svc.fwmark) == ("tcp", "wlc", None, None, None)
    real = svc.reals[0]
    assert (real.port, real.weight, real.forward) == (None, 1, "masq")


def test_synonyms_and_short_forms() -> None:
    node = lab("""
        - {address: 192.0.2.100, port: 80, persistent: true, netmask: 255.255.255.0,
           reals: [{address: 10.1.0.11, forward: route}, {address: 10.1.0.12, forward: ipip},
                   {address: 10.1.0.13, forward: Masquerading}]}
        - {fwmark: "0x10", persistent: 60, netmask: /16}
        - {fwmark: 17, persistent: false}
    """).nodes["director"]
    svc = node.ipvs[0]
    assert (svc.persistent, svc.netmask) == (300, 24)  # ipvsadm's bare -p; a mask kept as its prefix length
    assert [r.forward for r in svc.reals] == ["dr", "tun", "masq"]
    assert (node.ipvs[1].fwmark, node.ipvs[1].netmask) == (16, 16)
    assert node.ipvs[2].persistent is None


def test_ipvs_sysctls_are_accepted_and_checked() -> None:
    for key in ("net.ipv4.vs.conntrack", "net/ipv4/vs/conn_reuse_mode", "net.ipv4.ip_forward"):
        assert check_sysctl(key) is None, key
    assert check_sysctl("net.ipv4.vs.conntrak") == (
        "'net.ipv4.vs.conntrak' is not an IPVS sysctl; did you mean net.ipv4.vs.conntrack?"
    )
    loaded = lab(
        "- {address: 192.0.2.100, port: 80}",
        "    sysctls: {net.ipv4.vs.conntrack: 1, net/ipv4/vs/expire_nodest_conn: 1}\n",
    )
    assert loaded.nodes["director"].sysctls == {"net.ipv4.vs.conntrack": 1, "net/ipv4/vs/expire_nodest_conn": 1}


def test_ipvs_feature_is_inferred() -> None:
    loaded = lab("- {address: 192.0.2.100, port: 80}")
    assert needs_ipvs(loaded.nodes["director"].ipvs, {})
    assert not needs_ipvs(loaded.nodes["client"].ipvs, loaded.nodes["client"].sysctls)
    assert needs_ipvs([], {"net/ipv4/vs/conntrack": 1}) and needs_ipvs([], {"net.ipv4.vs.conntrack": 1})
    assert not needs_ipvs([], {"net.ipv4.ip_forward": 1})


def test_fwmark_service_family_is_said() -> None:
    with pytest.raises(LabError) as info:
        lab("- {fwmark: 1, reals: [{address: '2001:db8::11'}]}")
    assert str(info.value.problems[0]).endswith(
        "real server 2001:db8::11 is IPv6, but the service is IPv4 (FWM 1 — a fwmark service is IPv4 unless it says "
        "`family: 6`); masq forwarding stays within one family (the kernel refuses it: EINVAL); only `forward: tun` "
        "may cross families"
    )


def test_ipv6_service_keeps_ipv6_on() -> None:
    plan = build_plan(
        load_lab_text(
            textwrap.dedent("""
        name: v6
        nodes:
          d:
            ipvs: [{fwmark: 1, family: 6, reals: [{address: "2001:db8::1"}]}]
    """),
            "t.yaml",
        )
    )
    assert "ip netns exec v6.d sysctl -qw net.ipv6.conf.all.disable_ipv6=1" not in plan.render()


# ---------------------------------------------------------------- the plan


def test_plan_renders_the_exact_ipvsadm_commands() -> None:
    assert ipvsadm("""
        - address: 192.0.2.100
          port: 80
          scheduler: rr
          persistent: 10800
          netmask: 24
          reals:
            - {address: 10.1.0.11, port: 8080}
            - {address: 10.1.0.12, weight: 3}
            - {address: 10.1.0.13, forward: dr}
            - {address: 10.1.0.14, forward: tun}
        - {proto: udp, address: "2001:db8:100::100", port: 53, scheduler: sh, persistent: 60, netmask: 64,
           reals: [{address: "2001:db8::11", port: 5353}, {address: 10.1.0.11, forward: tun}]}
        - {proto: sctp, address: 192.0.2.100, port: 3868}
        - {fwmark: 0x4000, scheduler: mh, reals: [{address: 10.1.0.11}, {address: 10.1.0.12, port: 8080}]}
        - {fwmark: 7, family: 6, reals: [{address: "2001:db8::11", forward: route}]}
    """) == [
        "ipvsadm -A -t 192.0.2.100:80 -s rr -p 10800 -M 255.255.255.0",
        "ipvsadm -a -t 192.0.2.100:80 -r 10.1.0.11:8080 -m -w 1",
        "ipvsadm -a -t 192.0.2.100:80 -r 10.1.0.12:80 -m -w 3",
        "ipvsadm -a -t 192.0.2.100:80 -r 10.1.0.13:80 -g -w 1",
        "ipvsadm -a -t 192.0.2.100:80 -r 10.1.0.14:80 -i -w 1",
        "ipvsadm -A -u [2001:db8:100::100]:53 -s sh -p 60 -M 64",
        "ipvsadm -a -u [2001:db8:100::100]:53 -r [2001:db8::11]:5353 -m -w 1",
        "ipvsadm -a -u [2001:db8:100::100]:53 -r 10.1.0.11:53 -i -w 1",
        "ipvsadm -A --sctp-service 192.0.2.100:3868 -s wlc",
        "ipvsadm -A -f 16384 -s mh",
        "ipvsadm -a -f 16384 -r 10.1.0.11 -m -w 1",  # port 0: each packet keeps its own
        "ipvsadm -a -f 16384 -r 10.1.0.12:8080 -m -w 1",
        "ipvsadm -A -f 7 -6 -s wlc",
        "ipvsadm -a -f 7 -6 -r 2001:db8::11 -g -w 1",  # ipvsadm refuses [2001:db8::11] without a port
    ]


def test_ipvs_stage_runs_after_the_firewall_and_before_commands() -> None:
    assert STAGES.index("firewall") < STAGES.index("ipvs") < STAGES.index("commands")
    plan = build_plan(
        lab("- {address: 192.0.2.100, port: 80, reals: [{address: 10.1.0.11}]}", "    exec: [[ipvsadm, -Ln]]\n")
    )
    stages = [stage for stage, _ in plan.by_stage()]
    assert stages[-2:] == ["ipvs", "commands"]
    ops = dict(plan.by_stage())["ipvs"]
    assert [op.what for op in ops] == ["nodes.director.ipvs[0]", "nodes.director.ipvs[0].reals[0]"]
    assert {stage_of(op) for op in ops} == {"ipvs"} and all(op.undo() is None for op in ops)


def test_fake_driver_applies_ipvs_ops() -> None:
    from netlab.apply import apply_plan

    plan = build_plan(lab("- {address: 192.0.2.100, port: 80, reals: [{address: 10.1.0.11}]}"))
    driver = FakeDriver()
    apply_plan(plan, driver)
    assert [type(op).__name__ for op in driver.applied][-2:] == ["AddIpvsService", "AddIpvsReal"]


# ---------------------------------------------------------------- render round trip


@pytest.mark.parametrize("path", ["tests/golden/good/ipvs-services.yaml", "labs/ipvs-smoke.yaml"])
def test_render_round_trip(path: str) -> None:
    loaded = load_lab(REPO / path)
    text = render_yaml(loaded)
    again = load_lab_text(text, "rendered.yaml")
    assert [op.render() for op in build_plan(again).ops] == [op.render() for op in build_plan(loaded).ops]
    assert again.checks == loaded.checks
    assert render_yaml(again) == text


def test_render_keeps_an_ipvs_check() -> None:
    loaded = lab(
        "- {address: 192.0.2.100, port: 80}",
        textwrap.dedent("""
        checks:
          - name: flow
            probe: {from: client, to: "192.0.2.100:80"}
            ipvs: {on: director, expect: {real: [client, "10.1.0.11:8080"], forward: route, state: ESTABLISHED}}
    """),
    )
    text = render_yaml(loaded)
    assert (
        "      on: director\n      expect: {real: [client, '10.1.0.11:8080'], forward: dr, state: ESTABLISHED}\n"
        in text
    ), text
    assert load_lab_text(text, "r.yaml").checks == loaded.checks


def test_bad_ipvs_check_is_reported_with_its_line() -> None:
    with pytest.raises(LabError) as info:
        lab(
            "- {address: 192.0.2.100, port: 80}",
            textwrap.dedent("""
            checks:
              - name: flow
                probe: {from: client, to: "192.0.2.100:80"}
                ipvs: {on: nowhere}
        """),
        )
    assert (
        str(info.value.problems[0]) == "t.yaml:16: checks[0].ipvs.on: no node 'nowhere' in this lab (nodes: "
        "client, director)"
    )


# ---------------------------------------------------------------- generic netlink messages


def _roundtrip(msg: Any) -> Any:
    msg["header"]["type"] = 0x20
    msg.encode()
    back = ipvsmsg(bytes(msg.data))
    back.decode()
    return back


def _service_op(**kw: Any) -> AddIpvsService:
    return AddIpvsService("lb.director", "", **kw)


def test_service_message_has_every_attribute_the_kernel_wants() -> None:
    msg = _roundtrip(
        service_message(_service_op(address="192.0.2.100", port=80, scheduler="rr", persistent=60, netmask=24))
    )
    assert msg["cmd"] == IPVS_CMD_NEW_SERVICE and msg["version"] == 1
    attrs = dict(msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])
    assert attrs == {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_PROTOCOL": socket.IPPROTO_TCP,
        "IPVS_SVC_ATTR_ADDR": "192.0.2.100",
        "IPVS_SVC_ATTR_PORT": 80,
        "IPVS_SVC_ATTR_SCHED_NAME": "rr",
        "IPVS_SVC_ATTR_FLAGS": {"flags": 1, "mask": 0xFFFFFFFF},
        "IPVS_SVC_ATTR_TIMEOUT": 60,
        "IPVS_SVC_ATTR_NETMASK": "255.255.255.0",
    }
    view = _parse_service(msg)
    assert (view.proto, view.address, view.port, view.persistent, view.netmask) == ("tcp", "192.0.2.100", 80, 60, 24)
    assert view.text == "TCP  192.0.2.100:80 rr persistent 60 mask 255.255.255.0"


def test_ipv6_netmask_is_a_host_order_prefix_length() -> None:
    """The kernel reads an IPv6 service's IPVS_SVC_ATTR_NETMASK as a u32 prefix length."""
    msg = service_message(_service_op(family=6, address="2001:db8::1", port=80))
    msg["header"]["type"] = 0x20
    msg.encode()
    raw = bytes(msg.data)
    assert raw.endswith(struct.pack("=HHI", 8, 9, 128))  # NETMASK is the last attribute: len 8, type 9, 128
    view = _parse_service(
        _roundtrip(service_message(_service_op(family=6, address="2001:db8::1", port=80, persistent=5, netmask=64)))
    )
    assert (view.family, view.address, view.netmask) == (6, "2001:db8::1", 64)
    assert view.text == "TCP  [2001:db8::1]:80 wlc persistent 5 mask 64"


def test_fwmark_service_message_has_no_address() -> None:
    msg = _roundtrip(service_message(_service_op(fwmark=16, family=6, scheduler="sh")))
    attrs = dict(msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])
    assert attrs["IPVS_SVC_ATTR_FWMARK"] == 16 and attrs["IPVS_SVC_ATTR_AF"] == socket.AF_INET6
    assert "IPVS_SVC_ATTR_ADDR" not in attrs and "IPVS_SVC_ATTR_PROTOCOL" not in attrs
    assert _parse_service(msg).text == "FWM  16 IPv6 sh"


def test_real_message() -> None:
    op = AddIpvsReal(
        "lb.director",
        "",
        family=6,
        address="2001:db8::1",
        port=80,
        real="2001:db8::11",
        real_port=8080,
        weight=3,
        forward="dr",
    )
    msg = _roundtrip(real_message(op))
    assert msg["cmd"] == IPVS_CMD_NEW_DEST
    dest = dict(msg.get_attr("IPVS_CMD_ATTR_DEST")["attrs"])
    assert dest == {
        "IPVS_DEST_ATTR_ADDR_FAMILY": socket.AF_INET6,
        "IPVS_DEST_ATTR_ADDR": "2001:db8::11",
        "IPVS_DEST_ATTR_PORT": 8080,
        "IPVS_DEST_ATTR_FWD_METHOD": 3,
        "IPVS_DEST_ATTR_WEIGHT": 3,
        "IPVS_DEST_ATTR_U_THRESH": 0,
        "IPVS_DEST_ATTR_L_THRESH": 0,
    }
    assert _parse_real(msg, 6) == IpvsRealView("2001:db8::11", 8080, "dr", 3, 0, 0)
    key = dict(msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])
    assert key == {
        "IPVS_SVC_ATTR_AF": socket.AF_INET6,
        "IPVS_SVC_ATTR_PROTOCOL": socket.IPPROTO_TCP,
        "IPVS_SVC_ATTR_ADDR": "2001:db8::1",
        "IPVS_SVC_ATTR_PORT": 80,
    }


def test_kernel_errnos_are_explained() -> None:
    svc, real = _service_op(scheduler="xx"), AddIpvsReal("lb.director", "")
    assert _explain(svc, 17, "File exists (EEXIST)") == "File exists (EEXIST): the service already exists"
    assert _explain(svc, 2, "No such file or directory (ENOENT)").endswith("no scheduler 'xx' (module ip_vs_xx)")
    assert _explain(real, 3, "No such process (ESRCH)").endswith("no such service (was its `ipvsadm -A` refused?)")
    assert _explain(real, 99, "Whatever") == "Whatever"


# ---------------------------------------------------------------- reading


CONN_TABLE = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP C0000202 9C40 C0000264 0050 0A01000B 1F90 TIME_WAIT       119
UDP C0000202 9C41 C0000264 0035 0A01000C 14E9 UDP             299
IP  C0000200 0000 C0000267 0050 0A01000B 1F90 NONE             59
TCP 2001:0db8:0001:0000:0000:0000:0000:0002 9C42 2001:0db8:0100:0000:0000:0000:0000:0100 0050 \
2001:0db8:0010:0000:0000:0000:0000:0011 1F90 ESTABLISHED     899
"""


def test_connection_table_parses() -> None:
    conns = parse_conn_table(CONN_TABLE)
    assert conns[0] == IpvsConn("tcp", "192.0.2.2", 40000, "192.0.2.100", 80, "10.1.0.11", 8080, "TIME_WAIT", 119)
    assert conns[0].text == "TCP  01:59 TIME_WAIT   192.0.2.2:40000 192.0.2.100:80 10.1.0.11:8080"
    assert (conns[1].proto, conns[1].state, conns[1].dport) == ("udp", "UDP", 5353)
    assert conns[2].template and not conns[0].template and conns[2].client == "192.0.2.0"
    assert (conns[3].client, conns[3].vaddr, conns[3].daddr) == (
        "2001:db8:1::2",
        "2001:db8:100::100",
        "2001:db8:10::11",
    )
    assert parse_conn_table("Pro FromIP …\nnonsense line\n") == []


def services() -> list[IpvsServiceView]:
    reals = (IpvsRealView("10.1.0.11", 8080, "masq", 1, 1, 3), IpvsRealView("10.1.0.12", 8080, "masq", 1, 0, 4))
    return [
        IpvsServiceView("tcp", 4, "192.0.2.100", 80, None, "rr", None, 32, reals),
        IpvsServiceView("", 4, None, 0, 7, "wlc", None, 32, (IpvsRealView("10.1.0.13", 0, "dr", 2, 0, 0),)),
    ]


def test_table_reads_like_ipvsadm() -> None:
    assert table_text(services()) == [
        "TCP  192.0.2.100:80 rr",
        "  -> 10.1.0.11:8080               Masq    1      1          3",
        "  -> 10.1.0.12:8080               Masq    1      0          4",
        "FWM  7 wlc",
        "  -> 10.1.0.13:0                  Route   2      0          0",
    ]
    assert table_text([]) == ["(no virtual services)"]
    assert IpvsState((), ()).text == "(no virtual services)\n(no connections)"


# ---------------------------------------------------------------- the `ipvs:` expectation


NODES = {"client": {"192.0.2.2"}, "rs1": {"10.1.0.11"}, "rs2": {"10.1.0.12"}, "rs3": {"10.1.0.13"}}
OWNER = {a: n for n, addrs in NODES.items() for a in addrs}


def resolve(names: tuple[str, ...]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= NODES.get(n, {n})
    return out


def probe(sport: int, dst: str = "192.0.2.100", dport: int = 80, proto: str = "tcp") -> ProbeResult:
    return ProbeResult("ok", proto, "192.0.2.2", sport, dst, dport, "rs1", "192.0.2.2", 1, None, "ok", 0.1)


CONNS = [
    IpvsConn("tcp", "192.0.2.2", 40000, "192.0.2.100", 80, "10.1.0.11", 8080, "TIME_WAIT", 119),
    IpvsConn("tcp", "192.0.2.2", 40001, "192.0.2.100", 80, "10.1.0.12", 8080, "ESTABLISHED", 899),
    IpvsConn("tcp", "192.0.2.2", 0, "192.0.2.100", 80, "10.1.0.12", 8080, "NONE", 50),  # a template
    IpvsConn("tcp", "192.0.2.2", 40002, "192.0.2.104", 80, "10.1.0.13", 80, "ESTABLISHED", 899),  # fwmark 7
]


def judge(**kw: Any) -> Any:
    results = kw.pop("results", [probe(40000), probe(40001)])
    return judge_ipvs("director", IpvsExpect.model_validate(kw), results, CONNS, services(), resolve, OWNER.get)


def test_flow_is_found_by_client_port_templates_left_out() -> None:
    assert ipvs_flow(CONNS, probe(40001)) == [CONNS[1]]
    assert ipvs_flow(CONNS, probe(0)) == []
    assert ipvs_forward(CONNS[0], services()) == "masq"
    assert ipvs_forward(CONNS[3], services()) == "dr"  # a fwmark service's real, port 0: any port


def test_expectation_passes() -> None:
    assert judge().passed
    assert judge(real=["rs1", "rs2"], forward="masq").passed
    assert judge(real=["rs1:8080", "10.1.0.12:8080"]).passed
    assert judge(real="rs3", forward="route", results=[probe(40002, "192.0.2.104")]).passed
    assert judge(entry=False, results=[probe(40009)]).passed


def test_wrong_real() -> None:
    j = judge(real="rs1")
    assert j.reasons == [
        "IPVS in director for tcp 192.0.2.2:40001 → 192.0.2.100:80: expected real server rs1, "
        "the connection went to 10.1.0.12:8080 (rs2)"
    ]
    assert (
        j.evidence[0] == "ipvsadm -Lnc in director: TCP  14:59 ESTABLISHED 192.0.2.2:40001 192.0.2.100:80 "
        "10.1.0.12:8080"
    )
    assert "ipvsadm -Ln in director: TCP  192.0.2.100:80 rr" in j.evidence
    assert judge(real="rs1:9999").reasons[0].endswith("went to 10.1.0.11:8080 (rs1)")


def test_wrong_forward_and_state() -> None:
    j = judge(forward="dr", state="established")
    assert j.reasons == [
        "IPVS in director for tcp 192.0.2.2:40000 → 192.0.2.100:80: expected forward dr, the real server "
        "10.1.0.11:8080 is masq (Masq)",
        "IPVS in director for tcp 192.0.2.2:40000 → 192.0.2.100:80: expected state ESTABLISHED, saw TIME_WAIT",
    ]


def test_missing_and_unwanted_connections() -> None:
    j = judge(results=[probe(40009, dport=81)])
    assert j.reasons == [
        "expected an IPVS connection in director for tcp 192.0.2.2:40009 → 192.0.2.100:81, found "
        "none among 4 connections; director has no virtual service TCP 192.0.2.100:81 (its "
        "fwmark service 7 take only packets carrying the mark)"
    ]
    assert j.evidence[:2] == [
        "ipvsadm -Ln in director: TCP  192.0.2.100:80 rr",
        "ipvsadm -Ln in director:   -> 10.1.0.11:8080               Masq    1      1          3",
    ]
    j = judge(entry=False)
    assert j.reasons == [
        "expected no IPVS connection in director for tcp 192.0.2.2:40000 → 192.0.2.100:80, found "
        "one to 10.1.0.11:8080 (rs1)"
    ]


def test_probe_check_model_takes_ipvs() -> None:
    check = ProbeCheck.model_validate(
        {
            "name": "x",
            "probe": {"from": "a", "to": "b:80"},
            "ipvs": {"on": "d", "expect": {"real": "rs1", "forward": "gatewaying"}},
        }
    )
    assert (
        check.ipvs is not None
        and check.ipvs.expect.real == Expect(("rs1",))
        and check.ipvs.expect.forward == Expect(("dr",))
    )
