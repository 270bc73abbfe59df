"""kube-proxy's iptables mode for one node, as the `iptables-save` text it leaves behind.

Written from pkg/proxy/iptables/proxier.go (../shared/design/k8s-datapaths.md §1) and
loaded with iptables-nft-restore into the node's namespace, so `iptables-save` there
shows what it shows on a real node: the chain names (KUBE-SERVICES, KUBE-SVC-…,
KUBE-SEP-…, KUBE-EXT-…, KUBE-SVL-…), the 0x4000 masquerade mark, `statistic --mode
random --probability 1/(n-i)` endpoint choice, the hairpin KUBE-MARK-MASQ in each SEP,
`recent` for ClientIP affinity, and the jumps kube-proxy adds with EnsureRule (here in
the same dump, since the node's namespace starts empty). nfacct counters are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netlab.expand.services import (
    AFFINITY_SECONDS,
    MASQ_MARK,
    Endpoint,
    ProxyFragment,
    ServicePortView,
    endpoint_hash,
    port_proto_hash,
)
from netlab.lab.model import IptablesDump
from netlab.vocabulary import host_port

_MARKED = f"{MASQ_MARK}/{MASQ_MARK}"


def _comment_arg(text: str) -> str:
    """iptables-save quotes a comment only when it has spaces."""
    return f'"{text}"' if " " in text else text


def iptables_fragment(node: str, ports: list[ServicePortView], pod_cidr: str) -> ProxyFragment:
    """kube-proxy itself runs `iptables-restore --noflush`: its own chains are reset by their
    `:CHAIN` lines, everything else in the tables stays. A single-stack cluster: every
    service is the pods' family, and so is the dump."""
    dump = IptablesDump.model_validate(
        {"save": render_iptables(node, ports, pod_cidr), "family": ports[0].family, "noflush": True}
    )
    return ProxyFragment(iptables=(dump,))


_NAT_JUMPS = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    f"-A KUBE-POSTROUTING -m mark ! --mark {_MARKED} -j RETURN",
    f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
]
_FILTER_CHAINS = [
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FIREWALL",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SERVICES",
]
_FILTER_JUMPS = [
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
    "-j KUBE-PROXY-FIREWALL",
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" '
    "-j KUBE-EXTERNAL-SERVICES",
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
    "-j KUBE-PROXY-FIREWALL",
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" '
    "-j KUBE-EXTERNAL-SERVICES",
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
    "-j KUBE-PROXY-FIREWALL",
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {_MARKED} -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
]


@dataclass
class _Dump:
    """The dump being written: chains declared, and rules in the order iptables-save lists them."""

    nat_chains: list[str] = field(
        default_factory=lambda: ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    )
    filt: list[str] = field(default_factory=lambda: list(_FILTER_JUMPS))
    services: list[str] = field(default_factory=list)  # KUBE-SERVICES rules, in service order
    nodeports: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # per-service chains' rules, after the top-level ones

    def text(self) -> str:
        # the NodePort jump goes last in KUBE-SERVICES
        services = [
            *self.services,
            '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
            'this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        ]
        lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        lines += [f":{c} - [0:0]" for c in _FILTER_CHAINS]
        lines += [
            *self.filt,
            "COMMIT",
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
        ]
        lines += [f":{c} - [0:0]" for c in self.nat_chains]
        lines += [*_NAT_JUMPS, *services, *self.nodeports, *self.chains, "COMMIT"]
        return "\n".join(lines) + "\n"


def render_iptables(node: str, ports: list[ServicePortView], pod_cidr: str) -> str:
    """The filter and nat tables kube-proxy would write on `node`."""
    dump = _Dump()
    for sp in ports:
        _service_port(dump, sp, node, pod_cidr)
    return dump.text()


def _host_len(family: int) -> int:
    return 32 if family == 4 else 128


def _service_port(dump: _Dump, sp: ServicePortView, node: str, pod_cidr: str) -> None:
    """One service port: its KUBE-SERVICES and KUBE-NODEPORTS rules, its SVC, EXT/SVL and
    SEP chains; or, without endpoints, a REJECT in filter."""
    name, proto = sp.name, sp.protocol
    h = port_proto_hash(name, proto)
    svc, ext = f"KUBE-SVC-{h}", f"KUBE-EXT-{h}"
    match = f"-m {proto} -p {proto}"
    to_vip = f"-d {sp.cluster_ip}/{_host_len(sp.family)} --dport {sp.port}"
    if not sp.endpoints:  # no endpoints at all: REJECT in filter (kube-proxy's "has no endpoints")
        dump.filt.append(
            f'-A KUBE-SERVICES -m comment --comment "{name} has no endpoints" {match} {to_vip} '
            "-j REJECT --reject-with " + ("icmp-port-unreachable" if sp.family == 4 else "icmp6-port-unreachable")
        )
        return
    seps = [(ep, f"KUBE-SEP-{endpoint_hash(name, proto, host_port(ep.address, ep.port))}") for ep in sp.endpoints]
    dump.nat_chains.append(svc)
    dump.services.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {match} {to_vip} -j {svc}')
    for ip in sp.external_ips:
        dump.services.append(
            f'-A KUBE-SERVICES -m comment --comment "{name} external IP" {match} '
            f"-d {ip}/{_host_len(sp.family)} --dport {sp.port} -j {ext}"
        )
    if sp.load_balancer_ip:
        dump.services.append(
            f'-A KUBE-SERVICES -m comment --comment "{name} loadbalancer IP" {match} '
            f"-d {sp.load_balancer_ip}/{_host_len(sp.family)} --dport {sp.port} -j {ext}"
        )
    if sp.node_port is not None:
        dump.nodeports.append(
            f"-A KUBE-NODEPORTS -m comment --comment {_comment_arg(name)} {match} --dport {sp.node_port} -j {ext}"
        )
    # The service chain: masquerade what does not come from a pod, then pick an endpoint.
    dump.chains.append(
        f'-A {svc} -m comment --comment "{name} cluster IP" {match} {to_vip} ! -s {pod_cidr} -j KUBE-MARK-MASQ'
    )
    dump.chains += _pick(svc, name, seps, sp.affinity)
    if sp.node_port is not None or sp.external_ips or sp.load_balancer_ip:
        _external_chain(dump, sp, node, pod_cidr, seps)
    _endpoint_chains(dump, sp, seps)


def _external_chain(
    dump: _Dump, sp: ServicePortView, node: str, pod_cidr: str, seps: list[tuple[Endpoint, str]]
) -> None:
    """KUBE-EXT-…: external traffic (NodePort, external and load-balancer IPs) is
    masqueraded, or with a Local policy sent to the node's own endpoints (KUBE-SVL-…)."""
    name, h = sp.name, port_proto_hash(sp.name, sp.protocol)
    svc, ext, svl = f"KUBE-SVC-{h}", f"KUBE-EXT-{h}", f"KUBE-SVL-{h}"
    dump.nat_chains.append(ext)
    if not sp.local_only:
        dump.chains += [
            f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" -j KUBE-MARK-MASQ',
            f"-A {ext} -j {svc}",
        ]
        return
    local = [(ep, sep) for ep, sep in seps if ep.node == node]
    dump.nat_chains.append(svl)
    dump.chains += [
        f'-A {ext} -m comment --comment "pod traffic for {name} external destinations" -s {pod_cidr} -j {svc}',
        f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {name} external destinations" '
        "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
        f'-A {ext} -m comment --comment "route LOCAL traffic for {name} external destinations" '
        f"-m addrtype --src-type LOCAL -j {svc}",
        f"-A {ext} -j {svl}",
    ]
    dump.chains += _pick(svl, name, local, sp.affinity)
    if not local and sp.node_port is not None:  # no local endpoints: external traffic is dropped in filter
        dump.filt.append(
            f'-A KUBE-EXTERNAL-SERVICES -m comment --comment "{name} has no local endpoints" '
            f"-m addrtype --dst-type LOCAL -m {sp.protocol} -p {sp.protocol} "
            f"--dport {sp.node_port} -j DROP"
        )


def _endpoint_chains(dump: _Dump, sp: ServicePortView, seps: list[tuple[Endpoint, str]]) -> None:
    """KUBE-SEP-…: the hairpin masquerade, then the DNAT (with affinity, remembering the client)."""
    name, proto = sp.name, sp.protocol
    mask = "255.255.255.255" if sp.family == 4 else "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    for ep, sep in seps:
        if sep in dump.nat_chains:
            continue
        dump.nat_chains.append(sep)
        recent = f" -m recent --set --name {sep} --mask {mask} --rsource" if sp.affinity else ""
        dump.chains += [
            f"-A {sep} -m comment --comment {_comment_arg(name)} -s {ep.address}/{_host_len(sp.family)} "
            "-j KUBE-MARK-MASQ",
            f"-A {sep} -m comment --comment {_comment_arg(name)} -m {proto} -p {proto}{recent} "
            f"-j DNAT --to-destination {host_port(ep.address, ep.port)}",
        ]


def _pick(chain: str, name: str, seps: list[tuple[Endpoint, str]], affinity: bool) -> list[str]:
    """Endpoint choice: rule i of n jumps with probability 1/(n-i); the last always does.
    With ClientIP affinity, a `recent` check per endpoint comes first."""
    out: list[str] = []
    n = len(seps)
    for ep, sep in seps if affinity else []:
        addr = ep.address
        out.append(
            f'-A {chain} -m comment --comment "{name} -> {host_port(addr, ep.port)}" '
            f"-m recent --rcheck --seconds {AFFINITY_SECONDS} --reap --name {sep} "
            f"--mask {'255.255.255.255' if ':' not in addr else 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'} "
            f"--rsource -j {sep}"
        )
    for i, (ep, sep) in enumerate(seps):
        comment = f'-m comment --comment "{name} -> {host_port(ep.address, ep.port)}"'
        chance = f" -m statistic --mode random --probability {1 / (n - i):0.10f}" if i < n - 1 else ""
        out.append(f"-A {chain} {comment}{chance} -j {sep}")
    return out
