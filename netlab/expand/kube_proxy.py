"""kube-proxy on each cluster node: the writer of the cluster's `proxy_mode` (iptables,
nftables or ipvs), and the names the chosen mode takes on every node.

Each writer returns a ProxyFragment, the lab objects kube-proxy leaves in the node's
namespace; expansion puts them on the node next to what the user wrote there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from netlab.expand.kube_iptables import iptables_fragment
from netlab.expand.kube_ipvs import DUMMY as KUBE_IPVS_DUMMY
from netlab.expand.kube_ipvs import SETS as IPVS_SETS
from netlab.expand.kube_ipvs import ipvs_fragment, set_name
from netlab.expand.kube_nftables import nftables_fragment
from netlab.expand.services import DEFAULT_SERVICE_CIDR, Addr, Net, ProxyFragment, ServicePortView
from netlab.lab.model import Cluster
from netlab.lab.source import Complaint


def kube_proxy(
    cluster: Cluster, node: str, services: list[ServicePortView], address: Addr, subnet: Net
) -> ProxyFragment:
    """What kube-proxy programs on `node` (underlay `address`, pod `subnet`); nothing
    without services."""
    if not services:
        return ProxyFragment()
    if cluster.proxy_mode == "nftables":
        # NodePorts on the node's primary address (nftables mode's default --nodeport-addresses)
        family = ipaddress.ip_network(cluster.pod_cidr).version
        return nftables_fragment(
            node,
            services,
            cluster.pod_cidr,
            service_cidr=cluster.service_cidr or DEFAULT_SERVICE_CIDR[family],
            node_ips=[str(address)],
        )
    if cluster.proxy_mode == "ipvs":
        # NodePorts on every address of the node (IPVS mode's default --nodeport-addresses)
        return ipvs_fragment(node, services, cluster.pod_cidr, _node_ips(cluster, node, services, address, subnet))
    return iptables_fragment(node, services, cluster.pod_cidr)


def _node_ips(cluster: Cluster, node: str, services: list[ServicePortView], address: Addr, subnet: Net) -> list[str]:
    """The node's addresses of the services' family: eth0's, cni0's, flannel's vxlan
    device's (or tunl0's) and the user's own links', without loopback and IPv6 link-local ones."""
    version = services[0].family
    own = [address, subnet.network_address + 1]  # eth0, cni0
    if cluster.backend in ("vxlan", "ipip"):
        own.append(subnet.network_address)  # flannel's vxlan device, or tunl0
    own += [ipaddress.ip_interface(a).ip for link in cluster.nodes[node].links.values() for a in link.addresses]
    return list(
        dict.fromkeys(
            str(a)
            for a in own
            if a.version == version and not a.is_loopback and not (a.version == 6 and a.is_link_local)
        )
    )


def reserved_names(cluster: Cluster) -> Iterator[Complaint]:
    """What the IPVS proxier makes on every node is its own: a user's link or ipset of the
    same name would clash with it."""
    if not cluster.services or cluster.proxy_mode != "ipvs":
        return
    family = ipaddress.ip_network(cluster.pod_cidr).version
    ours = {set_name(name, family) for name, _, _ in IPVS_SETS}
    for name, node in cluster.nodes.items():
        if KUBE_IPVS_DUMMY in node.links:
            yield (
                ("cluster", "nodes", name, "links", KUBE_IPVS_DUMMY),
                (
                    f"{KUBE_IPVS_DUMMY} is the dummy kube-proxy's IPVS mode creates (it holds the service "
                    "addresses); name your link otherwise"
                ),
            )
        for i, ipset in enumerate(node.ipsets):
            if ipset.name in ours:
                yield (
                    ("cluster", "nodes", name, "ipsets", i, "name"),
                    (
                        f"ipset {ipset.name} is one kube-proxy's IPVS mode creates and fills on every node; "
                        "name your set otherwise"
                    ),
                )
