"""kube-proxy's IPVS mode for one node: what its proxier leaves in the node's namespace,
as the lab objects a user could have written (pkg/proxy/ipvs/proxier.go, ipset.go,
ipset/ipset.go; ../shared/design/k8s-datapaths.md §3).

- The dummy `kube-ipvs0`, DOWN as kube-proxy leaves it (it adds the link and never sets
  it up), holding every ClusterIP, external IP and load-balancer IP as a host address.
  IPVS sees only packets delivered locally; the kernel adds the local route of an
  address on a link that is down too, and that is all the VIP needs.
- An IPVS virtual service per ClusterIP:port, external IP:port, load-balancer IP:port,
  and per node address:NodePort — kube-proxy binds a NodePort on every address of the
  node (kube-ipvs0's and loopback ones aside). Scheduler rr; each endpoint a real server,
  masq, weight 1; sessionAffinity ClientIP is persistence (10800 s). Local external
  policy: the node's own endpoints, or all when it has none (kubernetes#97081).
- Its ipsets, all of them (its rules refer to empty ones too), filled: KUBE-CLUSTER-IP
  (hash:ip,port), KUBE-LOOP-BACK (hash:ip,port,ip: the node's endpoints, for the
  hairpin masquerade), KUBE-NODE-PORT-TCP/UDP (bitmap:port), KUBE-EXTERNAL-IP, …,
  KUBE-IPVS-IPS (kube-ipvs0's addresses); IPv6 ones are KUBE-6-….
- Its iptables-save dump, nat and filter in the order it writes them (the sets do the
  matching, so a handful of rules whatever the number of services), with the jumps it
  adds by EnsureRule (each prepended, so the last one ends up first).
- Its sysctls: net.ipv4.vs.conntrack (IPVS connections keep conntrack entries, which
  the MASQUERADE of NodePort traffic needs), vs.expire_nodest_conn,
  vs.expire_quiescent_template, ip_forward. (vs.conn_reuse_mode only on kernels 4.1 to
  5.8, which netlab's do not run.) And net.bridge.bridge-nf-call-iptables (ip6tables):
  kube-proxy only warns without it, but a node needs it — kubeadm's preflight refuses a
  node without it — because a pod's connection to a ClusterIP whose endpoint is on the
  same bridge is answered across the bridge, where only br_netfilter lets IPVS see the
  reply and give it the VIP back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from netlab.expand.services import AFFINITY_SECONDS, MASQ_MARK, Endpoint, ProxyFragment, ServicePortView
from netlab.lab.ipset import IpSet
from netlab.lab.ipvs import IpvsService
from netlab.lab.model import Dummy, IptablesDump

DUMMY = "kube-ipvs0"
SCHEDULER = "rr"
HASHSIZE, MAXELEM = 1024, 65536  # what kube-proxy passes to `ipset create` (ipset's defaults)
PORT_RANGE = "0-65535"  # its bitmap:port sets' range (ipset.DefaultPortRange)

# ipsetInfo: every set it creates, in its order, with the comment its rules carry.
SETS: tuple[tuple[str, str, str], ...] = (
    ("KUBE-LOOP-BACK", "hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    ("KUBE-CLUSTER-IP", "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"),
    ("KUBE-EXTERNAL-IP", "hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose"),
    (
        "KUBE-EXTERNAL-IP-LOCAL",
        "hash:ip,port",
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    ("KUBE-LOAD-BALANCER", "hash:ip,port", "Kubernetes service lb portal"),
    (
        "KUBE-LOAD-BALANCER-FW",
        "hash:ip,port",
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        "KUBE-LOAD-BALANCER-LOCAL",
        "hash:ip,port",
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        "hash:ip,port,ip",
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        "hash:ip,port,net",
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    ("KUBE-NODE-PORT-TCP", "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    ("KUBE-NODE-PORT-UDP", "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    (
        "KUBE-NODE-PORT-SCTP-HASH",
        "hash:ip,port",
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
        "hash:ip,port",
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port", "Kubernetes health check node port"),
    ("KUBE-IPVS-IPS", "hash:ip", "Addresses on the ipvs interface"),
)
# ipsetWithIptablesChain: a rule per non-empty set (table, from chain, to, match, protocol).
SET_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("KUBE-LOOP-BACK", "nat", "KUBE-POSTROUTING", "MASQUERADE", "dst,dst,src", ""),
    ("KUBE-LOAD-BALANCER", "nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER", "dst,dst", ""),
    ("KUBE-LOAD-BALANCER-LOCAL", "nat", "KUBE-LOAD-BALANCER", "RETURN", "dst,dst", ""),
    ("KUBE-NODE-PORT-LOCAL-TCP", "nat", "KUBE-NODE-PORT", "RETURN", "dst", "tcp"),
    ("KUBE-NODE-PORT-TCP", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "tcp"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "nat", "KUBE-NODE-PORT", "RETURN", "dst", "udp"),
    ("KUBE-NODE-PORT-UDP", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "udp"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "nat", "KUBE-NODE-PORT", "RETURN", "dst,dst", "sctp"),
    ("KUBE-NODE-PORT-SCTP-HASH", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst,dst", "sctp"),
    ("KUBE-LOAD-BALANCER-FW", "filter", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL", "dst,dst", ""),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", "dst,dst,src", ""),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", "dst,dst,src", ""),
)
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ")
FILTER_CHAINS = (
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
)
# iptablesJumpChain, as EnsureRule(Prepend) leaves them: per built-in chain, the last one first.
JUMPS: tuple[tuple[str, str, str, str], ...] = (
    ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
    ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
    ("filter", "INPUT", "KUBE-IPVS-FILTER", "kubernetes ipvs access filter"),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
    ("filter", "INPUT", "KUBE-NODE-PORT", "kubernetes health check rules"),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
    ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
    ("filter", "OUTPUT", "KUBE-IPVS-OUT-FILTER", "kubernetes ipvs access filter"),
)


def set_name(name: str, family: int) -> str:
    """An IPv6 proxier's sets are KUBE-6-…, cut to ipset's 31 characters (NewIPSet)."""
    return name if family == 4 else name.replace("KUBE-", "KUBE-6-", 1)[:31]


def _host(address: str) -> str:
    return f"{address}/{32 if ipaddress.ip_address(address).version == 4 else 128}"


def _reals(endpoints: tuple[Endpoint, ...], node: str, local_only: bool) -> list[dict[str, Any]]:
    """syncEndpoint: every endpoint, or with a Local policy the node's own (all of them
    when it has none: pods of the node may still use the service)."""
    chosen = [ep for ep in endpoints if ep.node == node] if local_only else []
    return [{"address": ep.address, "port": ep.port} for ep in chosen or endpoints]


def ipvs_fragment(node: str, ports: list[ServicePortView], pod_cidr: str, node_ips: list[str]) -> ProxyFragment:
    """What kube-proxy's IPVS proxier programs on `node`: kube-ipvs0, sysctls, ipsets, one
    --noflush iptables dump and the IPVS services. `node_ips`: the node's own addresses of
    the services' family, where NodePorts listen."""
    family = ports[0].family if ports else ipaddress.ip_network(pod_cidr).version
    sync = _Sync(node)
    for sp in ports:
        sync.service_port(sp, node_ips)
    sync.members["KUBE-IPVS-IPS"] = list(sync.bound)
    sysctls: dict[str, int] = {
        "net.ipv4.vs.conntrack": 1,
        "net.ipv4.vs.expire_nodest_conn": 1,
        "net.ipv4.vs.expire_quiescent_template": 1,
        "net.ipv4.ip_forward": 1,
    }
    sysctls["net.bridge.bridge-nf-call-iptables" if family == 4 else "net.bridge.bridge-nf-call-ip6tables"] = 1
    return ProxyFragment(
        links={DUMMY: Dummy(kind="dummy", up=False, addresses=[_host(a) for a in sync.bound])},
        sysctls=sysctls,
        ipsets=tuple(_ipsets(sync.members, family)),
        iptables=(
            IptablesDump.model_validate(
                {"save": render_rules(sync.members, family, pod_cidr), "family": family, "noflush": True}
            ),
        ),
        ipvs=tuple(IpvsService.model_validate(svc) for svc in sync.services),
    )


class _Sync:
    """One syncProxyRules pass on a node: the sets' members, the virtual services, and the
    addresses bound to kube-ipvs0, in the order the proxier adds them."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.members: dict[str, list[str]] = {name: [] for name, _, _ in SETS}
        self.bound: list[str] = []  # kube-ipvs0's addresses
        self.services: list[dict[str, Any]] = []

    def add(self, set_: str, entry: str) -> None:
        if entry not in self.members[set_]:
            self.members[set_].append(entry)

    def service(self, address: str, port: int, sp: ServicePortView, local_only: bool, bind: bool) -> None:
        svc: dict[str, Any] = {"proto": sp.protocol} if sp.protocol != "tcp" else {}
        svc.update(address=address, port=port, scheduler=SCHEDULER)
        if sp.affinity:
            svc["persistent"] = AFFINITY_SECONDS
        reals = _reals(sp.endpoints, self.node, local_only)
        if reals:  # none: IPVS answers the service's clients ICMP port unreachable
            svc["reals"] = reals
        self.services.append(svc)
        if bind and address not in self.bound:
            self.bound.append(address)

    def service_port(self, sp: ServicePortView, node_ips: list[str]) -> None:
        proto = sp.protocol
        for ep in sp.endpoints:  # the hairpin: an endpoint of this node reaching itself via the VIP
            if ep.node == self.node:
                self.add("KUBE-LOOP-BACK", f"{ep.address},{proto}:{ep.port},{ep.address}")
        self.add("KUBE-CLUSTER-IP", f"{sp.cluster_ip},{proto}:{sp.port}")
        self.service(sp.cluster_ip, sp.port, sp, False, True)
        for ip in sp.external_ips:
            self.add("KUBE-EXTERNAL-IP-LOCAL" if sp.local_only else "KUBE-EXTERNAL-IP", f"{ip},{proto}:{sp.port}")
            self.service(ip, sp.port, sp, sp.local_only, ip not in node_ips)  # never bound twice on the node
        if sp.load_balancer_ip:
            entry = f"{sp.load_balancer_ip},{proto}:{sp.port}"
            self.add("KUBE-LOAD-BALANCER", entry)
            if sp.local_only:
                self.add("KUBE-LOAD-BALANCER-LOCAL", entry)
            self.service(sp.load_balancer_ip, sp.port, sp, sp.local_only, sp.load_balancer_ip not in node_ips)
        if sp.node_port is not None and node_ips:
            suffix = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP-HASH"}[proto]
            entries = [str(sp.node_port)] if proto != "sctp" else [f"{ip},sctp:{sp.node_port}" for ip in node_ips]
            for entry in entries:
                self.add(f"KUBE-NODE-PORT-{suffix}", entry)
                if sp.local_only:
                    self.add(f"KUBE-NODE-PORT-LOCAL-{suffix}", entry)
            for ip in node_ips:
                self.service(ip, sp.node_port, sp, sp.local_only, False)


def _ipsets(members: dict[str, list[str]], family: int) -> Iterator[IpSet]:
    """Every set of ipsetInfo, in its order, with the options kube-proxy creates it with."""
    for name, kind, _ in SETS:
        spec: dict[str, Any] = {"name": set_name(name, family), "type": kind}
        if kind == "bitmap:port":
            spec["range"] = PORT_RANGE
        else:
            spec.update({"family": 6} if family == 6 else {})
            spec.update(hashsize=HASHSIZE, maxelem=MAXELEM)
        if members[name]:
            spec["members"] = members[name]
        yield IpSet.model_validate(spec)


_COMMENTS = {set_: comment for set_, _, comment in SETS}


def render_rules(members: dict[str, list[str]], family: int, pod_cidr: str) -> str:
    """The iptables-save dump of writeIptablesRules(): nat, then filter (RestoreAll's
    order), a rule per non-empty set where kube-proxy writes one."""

    def table(which: str, builtin: tuple[str, ...], chains: tuple[str, ...], rules: list[str]) -> list[str]:
        jumps = [f'-A {frm} -m comment --comment "{comment}" -j {to}' for t, frm, to, comment in JUMPS if t == which]
        return [
            f"*{which}",
            *[f":{c} ACCEPT [0:0]" for c in builtin],
            *[f":{c} - [0:0]" for c in chains],
            *jumps,
            *rules,
            "COMMIT",
        ]

    lines = [
        *table(
            "nat", ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), NAT_CHAINS, _nat_rules(members, family, pod_cidr)
        ),
        *table("filter", ("INPUT", "FORWARD", "OUTPUT"), FILTER_CHAINS, _filter_rules(members, family)),
    ]
    return "\n".join(lines) + "\n"


def _set_rules(members: dict[str, list[str]], family: int, table: str) -> list[str]:
    """SET_RULES' rules of `table` whose set has members."""
    return [
        f"-A {chain}" + (f" -p {proto}" if proto else "") + f' -m comment --comment "{_COMMENTS[set_]}" '
        f"-m set --match-set {set_name(set_, family)} {match} -j {target}"
        for set_, where, chain, target, match, proto in SET_RULES
        if where == table and members[set_]
    ]


def _nat_rules(members: dict[str, list[str]], family: int, pod_cidr: str) -> list[str]:
    def name(set_: str) -> str:
        return set_name(set_, family)

    nat = [
        f"-A KUBE-SERVICES -s {'127.0.0.0/8' if family == 4 else '::1/128'} -j RETURN",
        *_set_rules(members, family, "nat"),
    ]
    if members["KUBE-CLUSTER-IP"]:  # what does not come from a pod is masqueraded (--cluster-cidr's detector)
        nat.append(
            f'-A KUBE-SERVICES -m comment --comment "{_COMMENTS["KUBE-CLUSTER-IP"]}" '
            f"-m set --match-set {name('KUBE-CLUSTER-IP')} dst,dst ! -s {pod_cidr} -j KUBE-MARK-MASQ"
        )
    for set_ in ("KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL"):
        if members[set_]:
            match = f'-A KUBE-SERVICES -m comment --comment "{_COMMENTS[set_]}" -m set --match-set {name(set_)} dst,dst'
            if set_ == "KUBE-EXTERNAL-IP":
                nat.append(f"{match} -j KUBE-MARK-MASQ")
            # off-machine traffic, not from a bridge (a container) nor the node itself
            nat.append(f"{match} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
            nat.append(f"{match} -m addrtype --dst-type LOCAL -j ACCEPT")
    nat.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT")
    nat.append("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ")
    for set_ in ("KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"):  # acceptIPVSTraffic: last in KUBE-SERVICES
        if members[set_]:
            nat.append(f"-A KUBE-SERVICES -m set --match-set {name(set_)} dst,dst -j ACCEPT")
    return [
        *nat,
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]


def _filter_rules(members: dict[str, list[str]], family: int) -> list[str]:
    def name(set_: str) -> str:
        return set_name(set_, family)

    filt = [*_set_rules(members, family, "filter"), "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP"]
    filt += [
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} '
        "-j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
        f'-A KUBE-NODE-PORT -m comment --comment "{_COMMENTS["KUBE-HEALTH-CHECK-NODE-PORT"]}" '
        f"-m set --match-set {name('KUBE-HEALTH-CHECK-NODE-PORT')} dst -j ACCEPT",
    ]
    # KUBE-IPVS-FILTER: a new connection to a VIP on a port that is not a service is refused
    # (kubernetes#72236: otherwise kube-ipvs0's addresses would expose the node's own ports)
    for set_, match in (
        ("KUBE-LOAD-BALANCER", "dst,dst"),
        ("KUBE-CLUSTER-IP", "dst,dst"),
        ("KUBE-EXTERNAL-IP", "dst,dst"),
        ("KUBE-EXTERNAL-IP-LOCAL", "dst,dst"),
        ("KUBE-HEALTH-CHECK-NODE-PORT", "dst"),
    ):
        filt.append(f"-A KUBE-IPVS-FILTER -m set --match-set {name(set_)} {match} -j RETURN")
    filt.append(
        f"-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {name('KUBE-IPVS-IPS')} dst -j REJECT"
    )
    return filt
