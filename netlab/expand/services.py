"""`cluster.services` → what kube-proxy programs: each Service port resolved to its
cluster IP, node port and endpoints (the pods its selector matches), checked for the
mistakes Kubernetes itself would refuse. The per-mode rule writers (kube_iptables.py, …)
turn the resolved services into rules for every node.

Hashes and names follow kube-proxy (pkg/proxy/iptables/proxier.go): a service port is
`NAMESPACE/NAME` plus `:PORTNAME` when the port has a name, and its chains are
`KUBE-SVC-` + base32(sha256(that + protocol))[:16] (../shared/design/k8s-datapaths.md §1).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from netlab.lab.ipset import IpSet
from netlab.lab.ipvs import IpvsService
from netlab.lab.model import Cluster, Dummy, IptablesDump, NftRuleset, Service
from netlab.lab.source import Complaint, Path

# What every kube-proxy mode marks and remembers with:
MASQ_MARK = "0x4000"  # 1 << masqueradeBit (14), printed %#08x as kube-proxy does
AFFINITY_SECONDS = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds' default
FIRST_CLUSTER_IP = 10  # services without `cluster_ip:` get .10, .11, … (kube-dns's is .10)
DEFAULT_SERVICE_CIDR = {4: "10.96.0.0/12", 6: "fd00:10:96::/112"}  # kubeadm's; kind's for IPv6

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Endpoint:
    pod: str
    node: str
    address: str
    port: int


@dataclass(frozen=True)
class ServicePortView:
    """One port of one Service, resolved: what every mode's rules need."""

    service: str  # NAME
    namespace: str
    port_name: str
    protocol: str  # tcp | udp | sctp (lower case, as kube-proxy hashes it)
    cluster_ip: str
    port: int
    node_port: int | None
    external_ips: tuple[str, ...]
    load_balancer_ip: str | None
    affinity: bool  # sessionAffinity: ClientIP
    local_only: bool  # externalTrafficPolicy: Local
    endpoints: tuple[Endpoint, ...] = field(default=())

    @property
    def name(self) -> str:
        """kube-proxy's ServicePortName.String(): `ns/svc` or `ns/svc:port`."""
        return f"{self.namespace}/{self.service}" + (f":{self.port_name}" if self.port_name else "")

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.cluster_ip).version


@dataclass(frozen=True)
class ProxyFragment:
    """What kube-proxy programs on one node, as the lab objects a user could have written:
    each mode's writer fills its part. Expansion puts the links and lists after the node's
    own (a dump after the user's, which --noflush keeps) and the sysctls under theirs."""

    links: Mapping[str, Dummy] = field(default_factory=dict)  # IPVS mode's kube-ipvs0
    sysctls: Mapping[str, int] = field(default_factory=dict)
    ipsets: tuple[IpSet, ...] = ()
    nftables: tuple[NftRuleset, ...] = ()
    iptables: tuple[IptablesDump, ...] = ()
    ipvs: tuple[IpvsService, ...] = ()


def port_proto_hash(name: str, protocol: str) -> str:
    digest = hashlib.sha256((name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def endpoint_hash(name: str, protocol: str, endpoint: str) -> str:
    digest = hashlib.sha256((name + protocol + endpoint).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


@dataclass
class PodAddress:
    """What the service resolution needs to know about a pod after placement."""

    name: str
    node: str
    address: str
    labels: dict[str, str]
    namespace: str = "default"


def resolve_services(
    cluster: Cluster, pods: list[PodAddress], pod_family: int, complaints: list[Complaint]
) -> list[ServicePortView]:
    """Every port of every service, resolved; problems go to `complaints` at their key."""
    service_cidr = ipaddress.ip_network(cluster.service_cidr or DEFAULT_SERVICE_CIDR[pod_family])
    if service_cidr.version != pod_family:
        complaints.append(
            (
                ("cluster", "service_cidr"),
                (
                    f"service_cidr {service_cidr} is IPv{service_cidr.version} but the pods are IPv{pod_family}; "
                    "a single-stack cluster has one family"
                ),
            )
        )
        return []
    if service_cidr.overlaps(ipaddress.ip_network(cluster.pod_cidr)):
        complaints.append(
            (
                ("cluster", "service_cidr"),
                (
                    f"service_cidr {service_cidr} overlaps pod_cidr {cluster.pod_cidr}; service IPs must not be "
                    "pod addresses (e.g. 10.96.0.0/12 and 10.244.0.0/16)"
                ),
            )
        )
        return []
    taken = _given_cluster_ips(cluster, service_cidr, complaints)
    free = (service_cidr.network_address + i for i in range(FIRST_CLUSTER_IP, service_cidr.num_addresses - 1))
    low, high = cluster.node_port_range
    used_node_ports = _given_node_ports(cluster, complaints)
    next_node_port = (n for n in range(low, high + 1) if n not in used_node_ports)

    out: list[ServicePortView] = []
    for name, svc in cluster.services.items():
        path: Path = ("cluster", "services", name)
        complaints.extend(_service_port_problems(svc, path))
        cluster_ip = svc.cluster_ip
        if cluster_ip is None:
            nxt = next((a for a in free if a not in taken), None)
            if nxt is None:
                complaints.append((path, f"service_cidr {service_cidr} has no address left for {name}"))
                continue
            taken[nxt] = name
            cluster_ip = str(nxt)
        selected = _selected_pods(svc, pods, path, complaints)
        for i, p in enumerate(svc.ports):
            node_port = p.node_port
            if svc.type != "ClusterIP" and node_port is None:
                node_port = next(next_node_port, None)
                if node_port is None:
                    complaints.append(((*path, "ports", i), f"the node port range {low}-{high} is used up"))
            target = p.target_port or p.port
            out.append(
                ServicePortView(
                    service=name,
                    namespace=svc.namespace,
                    port_name=p.name,
                    protocol=p.protocol.lower(),
                    cluster_ip=cluster_ip,
                    port=p.port,
                    node_port=node_port,
                    external_ips=tuple(svc.external_ips),
                    load_balancer_ip=svc.load_balancer_ip,
                    affinity=svc.session_affinity == "ClientIP",
                    local_only=svc.external_traffic_policy == "Local",
                    endpoints=tuple(Endpoint(pod.name, pod.node, pod.address, target) for pod in selected),
                )
            )
    return out


def _given_cluster_ips(cluster: Cluster, service_cidr: Net, complaints: list[Complaint]) -> dict[Addr, str]:
    """The `cluster_ip:`s services give, each checked; the others are handed out around them."""
    taken: dict[Addr, str] = {}
    for name, svc in cluster.services.items():
        if svc.cluster_ip is None:
            continue
        path: Path = ("cluster", "services", name, "cluster_ip")
        ip = ipaddress.ip_address(svc.cluster_ip)
        if ip not in service_cidr:
            complaints.append((path, f"cluster_ip {ip} is not in service_cidr {service_cidr}"))
        elif ip in taken:
            complaints.append((path, f"cluster_ip {ip} is also service {taken[ip]}'s"))
        else:
            taken[ip] = name
    return taken


def _given_node_ports(cluster: Cluster, complaints: list[Complaint]) -> dict[int, str]:
    """The `node_port:`s service ports give, each checked; the others are handed out around them."""
    low, high = cluster.node_port_range
    used: dict[int, str] = {}
    for name, svc in cluster.services.items():
        for i, p in enumerate(svc.ports):
            if p.node_port is not None:
                path: Path = ("cluster", "services", name, "ports", i, "node_port")
                if svc.type == "ClusterIP":
                    complaints.append(
                        (
                            path,
                            (
                                "a ClusterIP service has no node port; use `type: NodePort` (or LoadBalancer), "
                                "or drop node_port"
                            ),
                        )
                    )
                elif not low <= p.node_port <= high:
                    complaints.append(
                        (
                            path,
                            (
                                f"node_port {p.node_port} is outside the node port range {low}-{high}; pick one "
                                f"inside, or widen `cluster.node_port_range` (kube-apiserver's --service-node-port-range)"
                            ),
                        )
                    )
                elif p.node_port in used:
                    complaints.append((path, f"node_port {p.node_port} is also {used[p.node_port]}'s"))
                else:
                    used[p.node_port] = f"{name}:{p.port}"
    return used


def _selected_pods(svc: Service, pods: list[PodAddress], path: Path, complaints: list[Complaint]) -> list[PodAddress]:
    """The pods of the service's namespace its selector matches: its endpoints."""
    matching = [p for p in pods if svc.selector and all(p.labels.get(k) == v for k, v in svc.selector.items())]
    selected = [p for p in matching if p.namespace == svc.namespace]  # a service selects in its namespace
    if svc.selector and not selected:
        mine = [p for p in pods if p.namespace == svc.namespace]
        labels = sorted({f"{k}={v}" for p in mine for k, v in p.labels.items()})
        elsewhere = sorted({p.namespace for p in matching})
        complaints.append(
            (
                (*path, "selector"),
                (
                    f"selector {_labels(svc.selector)} matches no pod of namespace {svc.namespace}, so the service "
                    "has no endpoints"
                    + (
                        f" (it matches pods of namespace {', '.join(elsewhere)}: set the service's or the pods' "
                        "`namespace:`)"
                        if elsewhere
                        else f" (pod labels there: {', '.join(labels)})"
                        if labels
                        else " (no pod there has labels)"
                    )
                    + "; use `selector: {}` for a service without endpoints on purpose"
                ),
            )
        )
    return selected


def _service_port_problems(svc: Service, path: Path) -> Iterator[Complaint]:
    seen: dict[tuple[int, str], int] = {}
    names: set[str] = set()
    for i, p in enumerate(svc.ports):
        key = (p.port, p.protocol)
        if key in seen:
            yield (*path, "ports", i, "port"), f"port {p.port}/{p.protocol} is already ports[{seen[key]}]"
        seen.setdefault(key, i)
        if len(svc.ports) > 1 and not p.name:
            yield (*path, "ports", i), "a service with several ports must name each one (`name: http`)"
        if p.name and p.name in names:
            yield (*path, "ports", i, "name"), f"port name {p.name!r} is used twice"
        names.add(p.name)
    if svc.type == "ClusterIP" and svc.external_traffic_policy == "Local":
        yield (
            (*path, "external_traffic_policy"),
            ("externalTrafficPolicy applies to NodePort and LoadBalancer services; drop it or change `type:`"),
        )
    if svc.load_balancer_ip and svc.type != "LoadBalancer":
        yield (*path, "load_balancer_ip"), "load_balancer_ip needs `type: LoadBalancer`"


def _labels(selector: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in selector.items())
