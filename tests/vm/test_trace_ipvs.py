"""`netlab trace` through an IPVS director (labs/lvs-nat.yaml), under a kernel with IPVS
(the VM): the walk names the virtual service, the real server IPVS picked and how it is
forwarded, from the director's own connection table, under the director's visit that took
the packet in to the VIP, right after IPVS's translation to that real server (at its
input hook); the bridge the LAN shares shows its ports; no trace table stays."""

from __future__ import annotations

from netlab.kernel.nft import list_ruleset
from netlab.observations import TRACE_TABLE_PREFIX
from netlab.probes.trace import hops, run_trace, text_lines, to_json
from netlab.pytest_plugin import LabFactory

CIP, RIP, VIP = "192.168.113.102", "192.168.113.99", "10.10.0.1"


def test_the_walk_names_the_ipvs_decision(netlab_lab: LabFactory) -> None:
    lab = netlab_lab("labs/lvs-nat.yaml", unique=True)
    trace = run_trace(lab.context, "client", VIP, "tcp", 8410)
    lines = text_lines(trace)
    why = "\n" + "\n".join(lines)
    assert trace.ok, why
    (ipvs,) = [h for h in hops(trace) if h.kind == "ipvs"]
    assert trace.nodes[ipvs.ns] == "ds", why
    assert (ipvs.fields["service"], ipvs.fields["forward"]) == (f"TCP {VIP}:8410 rr", "masq"), why
    assert ipvs.fields["real"] == {"address": RIP, "port": 8080}, why
    assert ipvs.fields["client"]["address"] == CIP and ipvs.fields["client"]["port"] == trace.probes[0].sport, why
    text = f"    ↳ IPVS TCP {VIP}:8410 rr: {CIP}:{trace.probes[0].sport} scheduled to real server {RIP}:8080 (Masq)"
    at = next(i for i, line in enumerate(lines) if line.startswith(text))
    assert any(line.startswith(f"  ds ({lab.ns('ds')})  {CIP} → {VIP}") for line in lines[:at]), why
    # IPVS's own DNAT (net.ipv4.vs.conntrack=1 records it), made in its input hook, just above
    assert lines[at - 2].startswith(f"    NAT (DNAT, at input): {CIP}:{trace.probes[0].sport} → {VIP}:8410 is now"), why
    assert ("switch", "br0") in {(trace.nodes[h.ns], h.fields.get("bridge")) for h in hops(trace)}, why
    assert any(h["kind"] == "ipvs" for h in to_json(trace)["hops"]), why
    for node, ns in lab.context.nodes.items():
        assert TRACE_TABLE_PREFIX not in list_ruleset(ns), node
