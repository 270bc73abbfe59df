"""`netlab trace` through kube-proxy's IPVS mode (labs/kube-proxy-ipvs.yaml), under a
kernel with IPVS (the VM): a pod's connection to a ClusterIP names node1's IPVS decision —
the service, the endpoint it picked (the pod that answered) and masq — and, when that
endpoint is on node2, the VXLAN hop to it."""

from __future__ import annotations

from netlab.probes.trace import hops, run_trace, text_lines
from netlab.pytest_plugin import LabFactory

VIP = "10.96.0.10"
ENDPOINTS = {"web-0": "10.244.1.2", "web-1": "10.244.0.3", "web-2": "10.244.1.3"}


def test_a_clusterip_connection_names_the_endpoint_ipvs_picked(netlab_lab: LabFactory) -> None:
    lab = netlab_lab("labs/kube-proxy-ipvs.yaml", unique=True)
    for _ in range(3):  # round robin: an endpoint on node1 and one on node2 among three
        trace = run_trace(lab.context, "client", VIP, "tcp", 80)
        why = "\n" + "\n".join(text_lines(trace))
        assert trace.ok, why
        (ipvs,) = [h for h in hops(trace) if h.kind == "ipvs"]
        served = trace.probes[0].served_by
        assert served in ENDPOINTS, why
        assert (trace.nodes[ipvs.ns], ipvs.fields["service"], ipvs.fields["forward"]) == (
            "node1",
            f"TCP {VIP}:80 rr",
            "masq",
        ), why
        assert ipvs.fields["real"] == {"address": ENDPOINTS[served], "port": 8080}, why
        tunnels = [h.kind for h in hops(trace) if h.kind.startswith("vxlan")]
        assert bool(tunnels) == ENDPOINTS[served].startswith("10.244.1."), why
