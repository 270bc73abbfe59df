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

from netlab.expand.services import Endpoint, ProxyFragment, ServicePortView, endpoint_hash, port_proto_hash
from netlab.lab.model import IptablesDump
from netlab.vocabulary import host_port

MASQ_MARK = "0x4000/0x4000"
AFFINITY_SECONDS = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds' default


def _q(text: str) -> str:
    """iptables-save quotes a comment only when it has spaces."""
    return f'"{text}"' if " " in text else text


def iptables_fragment(node: str, ports: list[ServicePortView], pod_cidr: str) -> ProxyFragment:
    """kube-proxy itself runs `iptables-restore --noflush`: its own chains are reset by their
    `:CHAIN` lines, everything else in the tables stays. A single-stack cluster: every
    service is the pods' family, and so is the dump."""
    dump = IptablesDump.model_validate(
        {"save": render_iptables(node, ports, pod_cidr), "family": ports[0].family, "noflush": True})
    return ProxyFragment(iptables=(dump,))


def render_iptables(node: str, ports: list[ServicePortView], pod_cidr: str) -> str:
    """The filter and nat tables kube-proxy would write on `node`."""
    nat_chains = ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    nat: list[str] = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK.split('/')[0]}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK.split('/')[0]}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    filter_chains = ["KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-NODEPORTS",
                     "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"]
    filt: list[str] = [
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
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK} -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    services: list[str] = []  # KUBE-SERVICES rules, in service order; the NodePort jump goes last
    nodeports: list[str] = []
    chains: list[str] = []  # per-service chains' rules, after the top-level ones
    for sp in ports:
        name, proto = sp.name, sp.protocol
        h = port_proto_hash(name, proto)
        svc, ext, svl = f"KUBE-SVC-{h}", f"KUBE-EXT-{h}", f"KUBE-SVL-{h}"
        match = f"-m {proto} -p {proto}"
        to_vip = f"-d {sp.cluster_ip}/{32 if sp.family == 4 else 128} --dport {sp.port}"
        if not sp.endpoints:  # no endpoints at all: REJECT in filter (kube-proxy's "has no endpoints")
            filt.append(f'-A KUBE-SERVICES -m comment --comment "{name} has no endpoints" {match} {to_vip} '
                        "-j REJECT --reject-with " + ("icmp-port-unreachable" if sp.family == 4 else
                                                      "icmp6-port-unreachable"))
            continue
        seps = [(ep, f"KUBE-SEP-{endpoint_hash(name, proto, host_port(ep.address, ep.port))}") for ep in sp.endpoints]
        external = sp.node_port is not None or sp.external_ips or sp.load_balancer_ip
        local = [(ep, sep) for ep, sep in seps if ep.node == node]
        nat_chains.append(svc)
        services.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {match} {to_vip} -j {svc}')
        for ip in sp.external_ips:
            services.append(f'-A KUBE-SERVICES -m comment --comment "{name} external IP" {match} '
                            f"-d {ip}/{32 if sp.family == 4 else 128} --dport {sp.port} -j {ext}")
        if sp.load_balancer_ip:
            services.append(f'-A KUBE-SERVICES -m comment --comment "{name} loadbalancer IP" {match} '
                            f"-d {sp.load_balancer_ip}/{32 if sp.family == 4 else 128} --dport {sp.port} -j {ext}")
        if sp.node_port is not None:
            nodeports.append(f"-A KUBE-NODEPORTS -m comment --comment {_q(name)} {match} "
                             f"--dport {sp.node_port} -j {ext}")
        # The service chain: masquerade what does not come from a pod, then pick an endpoint.
        chains.append(f'-A {svc} -m comment --comment "{name} cluster IP" {match} {to_vip} '
                      f"! -s {pod_cidr} -j KUBE-MARK-MASQ")
        chains += _pick(svc, name, seps, sp.affinity)
        if external:
            nat_chains.append(ext)
            if sp.local_only:
                nat_chains.append(svl)
                chains += [
                    f'-A {ext} -m comment --comment "pod traffic for {name} external destinations" '
                    f"-s {pod_cidr} -j {svc}",
                    f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {name} external destinations" '
                    "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                    f'-A {ext} -m comment --comment "route LOCAL traffic for {name} external destinations" '
                    f"-m addrtype --src-type LOCAL -j {svc}",
                    f"-A {ext} -j {svl}",
                ]
                chains += _pick(svl, name, local, sp.affinity)
                if not local:  # no local endpoints: external traffic is dropped in filter
                    filt += [
                        f'-A KUBE-EXTERNAL-SERVICES -m comment --comment "{name} has no local endpoints" '
                        f"-m addrtype --dst-type LOCAL {match} --dport {sp.node_port} -j DROP"
                    ] if sp.node_port is not None else []
            else:
                chains += [f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" '
                           "-j KUBE-MARK-MASQ", f"-A {ext} -j {svc}"]
        for ep, sep in seps:
            if sep in nat_chains:
                continue
            nat_chains.append(sep)
            recent = f" -m recent --set --name {sep} --mask {'255.255.255.255' if sp.family == 4 else 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'} --rsource" if sp.affinity else ""  # noqa: E501
            chains += [
                f"-A {sep} -m comment --comment {_q(name)} -s {ep.address}/{32 if sp.family == 4 else 128} "
                "-j KUBE-MARK-MASQ",
                f"-A {sep} -m comment --comment {_q(name)} {match}{recent} "
                f"-j DNAT --to-destination {host_port(ep.address, ep.port)}",
            ]
    services.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                    'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f":{c} - [0:0]" for c in filter_chains]
    lines += [*filt, "COMMIT", "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
              ":POSTROUTING ACCEPT [0:0]"]
    lines += [f":{c} - [0:0]" for c in nat_chains]
    lines += [*nat, *services, *nodeports, *chains, "COMMIT"]
    return "\n".join(lines) + "\n"


def _pick(chain: str, name: str, seps: list[tuple[Endpoint, str]], affinity: bool) -> list[str]:
    """Endpoint choice: rule i of n jumps with probability 1/(n-i); the last always does.
    With ClientIP affinity, a `recent` check per endpoint comes first."""
    out: list[str] = []
    n = len(seps)
    for ep, sep in seps if affinity else []:
        addr = ep.address
        out.append(f'-A {chain} -m comment --comment "{name} -> {host_port(addr, ep.port)}" '
                   f"-m recent --rcheck --seconds {AFFINITY_SECONDS} --reap --name {sep} "
                   f"--mask {'255.255.255.255' if ':' not in addr else 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'} "
                   f"--rsource -j {sep}")
    for i, (ep, sep) in enumerate(seps):
        comment = f'-m comment --comment "{name} -> {host_port(ep.address, ep.port)}"'
        chance = f" -m statistic --mode random --probability {1 / (n - i):0.10f}" if i < n - 1 else ""
        out.append(f"-A {chain} {comment}{chance} -j {sep}")
    return out
