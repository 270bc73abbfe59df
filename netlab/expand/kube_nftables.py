"""kube-proxy's nftables mode for one node, as the `nft -f` text of its `kube-proxy` table.

Written from pkg/proxy/nftables/proxier.go and the expected output of its
TestOverallNFTablesRules (../shared/design/k8s-datapaths.md §2): table `ip kube-proxy`
(`ip6 kube-proxy` for an IPv6 cluster) with the sets cluster-ips and nodeport-ips, the
verdict maps service-ips, service-nodeports, no-endpoint-services, no-endpoint-nodeports
and firewall-ips, the base chains at kube-proxy's hooks and priorities, and per service
port the chains `service-H8-NS/NAME/PROTO/PORTNAME` (Cluster policy), `local-…` (Local
policy), `external-…` (NodePort, external IPs, LB IP) and `endpoint-H8-…__IP/PORT`, where
H8 = base32(sha256(the name after the prefix))[:8] (kube-proxy's hashAndTruncate).

What it does, as kube-proxy does: `numgen random mod N vmap { i : goto endpoint-… }`
picks the endpoint; traffic to a ClusterIP not from the pod network, external traffic
with Cluster policy, and an endpoint reaching itself (hairpin) get `mark-for-masquerade`
(mark 0x4000), which `masquerading` (nat postrouting) turns into `masquerade
fully-random`; ClientIP affinity keeps `affinity-…` sets (dynamic, timeout) filled by
`update @affinity-… { ip saddr }`; a service without endpoints is rejected through
`no-endpoint-services` (`goto reject-chain`), external traffic to a Local-policy service
without endpoints on this node is dropped. NodePorts answer on the node's primary
address only (`nodeport-ips`), nftables mode's default (`--nodeport-addresses primary`).

Ordering: kube-proxy's own transaction names endpoint chains in a vmap before it adds
them, which `nft -f` refuses; here every chain (and affinity set) of a service is added
before any rule refers to it. Left out, as the lab model has no such fields:
loadBalancerSourceRanges (`firewall-…` chains; the firewall-ips map stays empty),
internalTrafficPolicy, topology hints, --masquerade-all.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from netlab.expand.services import AFFINITY_SECONDS, MASQ_MARK, Endpoint, ProxyFragment, ServicePortView
from netlab.lab.model import NftRuleset
from netlab.vocabulary import host_port

TABLE = "kube-proxy"
NAME_BASE_MAX = 256 - 16  # knftables.NameLengthMax minus the longest prefix ("chainNameBaseLengthMax")

# The top-level chains in baseRules' order: a base chain has its type, hook and priority
# (the firewall check before DNAT, the endpoint checks at filter priority, NAT at
# dstnat/srcnat), a regular chain None.
CHAINS: tuple[tuple[str, tuple[str, str, int] | None], ...] = (
    ("cluster-ips-check", None),
    ("filter-prerouting-pre-dnat", ("filter", "prerouting", -110)),
    ("filter-output-pre-dnat", ("filter", "output", -110)),
    ("filter-forward", ("filter", "forward", 0)),
    ("filter-input", ("filter", "input", 0)),
    ("filter-output", ("filter", "output", 0)),
    ("firewall-check", None),
    ("mark-for-masquerade", None),
    ("masquerading", None),
    ("nat-output", ("nat", "output", -100)),
    ("nat-postrouting", ("nat", "postrouting", 100)),
    ("nat-prerouting", ("nat", "prerouting", -100)),
    ("nodeport-endpoints-check", None),
    ("reject-chain", None),
    ("services", None),
    ("service-endpoints-check", None),
)


def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: `H8-name`, cut to 240 characters with "..." if longer."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    out = f"{digest[:8]}-{name}"
    return out if len(out) <= NAME_BASE_MAX else out[: NAME_BASE_MAX - 3] + "..."


def chain_base(sp: ServicePortView) -> str:
    """servicePortChainNameBase: `H8-NS/NAME/PROTO/PORTNAME` (PORTNAME empty for an unnamed port)."""
    return hash_and_truncate(f"{sp.namespace}/{sp.service}/{sp.protocol}/{sp.port_name}")


def endpoint_base(sp: ServicePortView, ep: Endpoint) -> str:
    """servicePortEndpointChainNameBase: `…__IP/PORT`, an IPv6 address with `.` for `:`."""
    ip = ep.address.replace(":", ".")
    return hash_and_truncate(f"{sp.namespace}/{sp.service}/{sp.protocol}/{sp.port_name}__{ip}/{ep.port}")


def _nft_string(text: str) -> str:
    """A string in nft's syntax: double quotes, an inner one escaped."""
    return '"' + text.replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Family:
    table: str  # "ip kube-proxy"
    x: str  # ip | ip6: the match keyword
    addr: str  # ipv4_addr | ipv6_addr: the set key type
    version: int


def _family(version: int) -> _Family:
    if version == 6:
        return _Family(f"ip6 {TABLE}", "ip6", "ipv6_addr", 6)
    return _Family(f"ip {TABLE}", "ip", "ipv4_addr", 4)


def nftables_fragment(
    node: str,
    ports: Sequence[ServicePortView],
    pod_cidr: str,
    *,
    service_cidr: str | None = None,
    node_ips: Sequence[str] = (),
) -> ProxyFragment:
    """Its own `kube-proxy` table, loaded in one `nft -f` transaction."""
    ruleset = render_nftables(node, ports, pod_cidr, service_cidr=service_cidr, node_ips=node_ips)
    return ProxyFragment(nftables=(NftRuleset(ruleset=ruleset),))


def render_nftables(
    node: str,
    ports: Sequence[ServicePortView],
    pod_cidr: str,
    *,
    service_cidr: str | None = None,
    node_ips: Sequence[str] = (),
) -> str:
    """The `kube-proxy` table kube-proxy's nftables mode would leave on `node`, as `nft -f`
    input. The family is the pod network's; `service_cidr` feeds the "drop traffic to
    unallocated ClusterIPs" rule (left out without it); `node_ips` of that family are the
    NodePort addresses."""
    fam = _family(ipaddress.ip_network(pod_cidr).version)
    t, x = fam.table, fam.x
    nodeport_ips = [ip for ip in node_ips if ipaddress.ip_address(ip).version == fam.version]
    out = [f"# kube-proxy (nftables mode) on {node}: pkg/proxy/nftables/proxier.go", *_table_head(fam, service_cidr)]
    if nodeport_ips:
        out.append(f"add element {t} nodeport-ips {{ {', '.join(nodeport_ips)} }}")
    out.append(f"add rule {t} service-endpoints-check {x} daddr . meta l4proto . th dport vmap @no-endpoint-services")
    cluster_ips: set[str] = set()
    for sp in ports:
        out += ["", f"# {sp.name}", *_service_port(fam, node, sp, pod_cidr, cluster_ips)]
    return "\n".join(out) + "\n"


def _table_head(fam: _Family, service_cidr: str | None) -> list[str]:
    """The table, its sets and maps, its chains and the rules that do not depend on the services."""
    t = fam.table
    out = [
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        "",
        f'add set {t} cluster-ips {{ type {fam.addr} ; comment "Active ClusterIPs" ; }}',
        f'add set {t} nodeport-ips {{ type {fam.addr} ; comment "IPs that accept NodePort traffic" ; }}',
        "",
        f"add map {t} firewall-ips {{ type {fam.addr} . inet_proto . inet_service : verdict ; "
        'comment "destinations that are subject to LoadBalancerSourceRanges" ; }',
        f"add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }',
        f"add map {t} no-endpoint-services {{ type {fam.addr} . inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to services with no endpoints" ; }',
        f"add map {t} service-ips {{ type {fam.addr} . inet_proto . inet_service : verdict ; "
        'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        f'add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}',
        "",
    ]
    for name, base in CHAINS:
        if base:
            out.append(f"add chain {t} {name} {{ type {base[0]} hook {base[1]} priority {base[2]} ; }}")
        elif name == "reject-chain":
            out.append(
                f'add chain {t} {name} {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}'
            )
        else:
            out.append(f"add chain {t} {name}")
    x = fam.x
    out += [
        "",
        f'add rule {t} cluster-ips-check {x} daddr @cluster-ips reject comment "Reject traffic to invalid ports '
        'of ClusterIPs"',
        *(
            [
                f"add rule {t} cluster-ips-check {x} daddr {{ {service_cidr} }} drop "
                'comment "Drop traffic to unallocated ClusterIPs"'
            ]
            if service_cidr
            else []
        ),
        f"add rule {t} filter-prerouting-pre-dnat ct state new jump firewall-check",
        f"add rule {t} filter-forward ct state new jump service-endpoints-check",
        f"add rule {t} filter-forward ct state new jump cluster-ips-check",
        f"add rule {t} filter-input ct state new jump nodeport-endpoints-check",
        f"add rule {t} filter-input ct state new jump service-endpoints-check",
        f"add rule {t} filter-output ct state new jump service-endpoints-check",
        f"add rule {t} filter-output-pre-dnat ct state new jump firewall-check",
        f"add rule {t} filter-output ct state new jump cluster-ips-check",
        f"add rule {t} firewall-check {x} daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"add rule {t} masquerading mark and {MASQ_MARK} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK}",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nodeport-endpoints-check {x} daddr @nodeport-ips meta l4proto . th dport "
        "vmap @no-endpoint-nodeports",
        f"add rule {t} reject-chain reject",
        f"add rule {t} services {x} daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services {x} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        "",
    ]
    return out


def _service_port(fam: _Family, node: str, sp: ServicePortView, pod_cidr: str, cluster_ips: set[str]) -> list[str]:
    """One service port's sets, chains, rules and map elements (chains before the rules)."""
    t, x, proto = fam.table, fam.x, sp.protocol
    base = chain_base(sp)
    service, local, external = f"service-{base}", f"local-{base}", f"external-{base}"
    eps = [(ep, endpoint_base(sp, ep)) for ep in sp.endpoints]
    local_eps = [(ep, b) for ep, b in eps if ep.node == node]
    has_endpoints = bool(eps)
    externally = sp.node_port is not None or bool(sp.external_ips) or sp.load_balancer_ip is not None
    uses_local = sp.local_only and bool(local_eps)
    uses_external = has_endpoints and externally
    has_external = has_endpoints and (not sp.local_only or bool(local_eps))
    sets: list[str] = []
    chains: list[str] = []
    rules: list[str] = []
    if sp.affinity:
        sets += [
            f"add set {t} affinity-{b} {{ type {fam.addr} ; flags dynamic,timeout ; timeout {AFFINITY_SECONDS}s ; }}"
            for _, b in eps
        ]
    if has_endpoints:
        chains.append(service)
        rules.append(
            f"add rule {t} {service} {x} daddr {sp.cluster_ip} {x} saddr != {pod_cidr} jump mark-for-masquerade"
        )
        rules += _to_endpoints(t, x, service, eps, sp.affinity)
    if uses_external:
        chains.append(external)
        if sp.local_only:
            rules += [
                f'add rule {t} {external} {x} saddr {pod_cidr} goto {service} comment "short-circuit pod traffic"',
                f"add rule {t} {external} fib saddr type local jump mark-for-masquerade "
                'comment "masquerade local traffic"',
                f'add rule {t} {external} fib saddr type local goto {service} comment "short-circuit local traffic"',
            ]
        else:
            rules.append(f"add rule {t} {external} jump mark-for-masquerade")
        if has_external:
            rules.append(f"add rule {t} {external} goto {local if sp.local_only else service}")
    if uses_local:
        chains.append(local)
        rules += _to_endpoints(t, x, local, local_eps, sp.affinity)
    for ep, b in eps:  # every endpoint is reachable from here: Cluster policy uses them all
        chain = f"endpoint-{b}"
        chains.append(chain)
        rules.append(f"add rule {t} {chain} {x} saddr {ep.address} jump mark-for-masquerade")
        if sp.affinity:
            rules.append(f"add rule {t} {chain} update @affinity-{b} {{ {x} saddr }}")
        rules.append(f"add rule {t} {chain} meta l4proto {proto} dnat to {host_port(ep.address, ep.port)}")
    return [*sets, *(f"add chain {t} {c}" for c in chains), *rules, *_port_elements(fam, node, sp, cluster_ips)]


def _port_elements(fam: _Family, node: str, sp: ServicePortView, cluster_ips: set[str]) -> list[str]:
    """The port's elements of the verdict maps: to its chains, or to the no-endpoint verdict."""
    t, proto = fam.table, sp.protocol
    base = chain_base(sp)
    service, external = f"service-{base}", f"external-{base}"
    has_endpoints = bool(sp.endpoints)
    has_external = has_endpoints and (not sp.local_only or any(ep.node == node for ep in sp.endpoints))
    # no endpoints at all: reject; Local policy without endpoints here: drop external traffic
    external_verdict = "goto reject-chain" if not has_endpoints else "drop"
    elements: list[str] = []
    if sp.cluster_ip not in cluster_ips:
        cluster_ips.add(sp.cluster_ip)
        elements.append(f"add element {t} cluster-ips {{ {sp.cluster_ip} }}")
    comment = f"comment {_nft_string(sp.name)}"
    if has_endpoints:
        elements.append(f"add element {t} service-ips {{ {sp.cluster_ip} . {proto} . {sp.port} : goto {service} }}")
    else:
        elements.append(
            f"add element {t} no-endpoint-services {{ {sp.cluster_ip} . {proto} . {sp.port} {comment} "
            ": goto reject-chain }"
        )
    for ip in [*sp.external_ips, *([sp.load_balancer_ip] if sp.load_balancer_ip else [])]:
        if has_endpoints:
            elements.append(f"add element {t} service-ips {{ {ip} . {proto} . {sp.port} : goto {external} }}")
        if not has_external:
            elements.append(
                f"add element {t} no-endpoint-services {{ {ip} . {proto} . {sp.port} {comment} : {external_verdict} }}"
            )
    if sp.node_port is not None:
        if has_endpoints:
            elements.append(f"add element {t} service-nodeports {{ {proto} . {sp.node_port} : goto {external} }}")
        if not has_external:
            elements.append(
                f"add element {t} no-endpoint-nodeports {{ {proto} . {sp.node_port} {comment} : {external_verdict} }}"
            )
    return elements


def _to_endpoints(t: str, x: str, chain: str, eps: list[tuple[Endpoint, str]], affinity: bool) -> list[str]:
    """writeServiceToEndpointRules: affinity first (a client seen before goes back to its
    endpoint), then a random pick among all."""
    out = [f"add rule {t} {chain} {x} saddr @affinity-{b} goto endpoint-{b}" for _, b in eps] if affinity else []
    picks = " , ".join(f"{i} : goto endpoint-{b}" for i, (_, b) in enumerate(eps))
    out.append(f"add rule {t} {chain} numgen random mod {len(eps)} vmap {{ {picks} }}")
    return out
