"""The `cluster:` section → the explicit nodes flannel and the CNI bridge plugin would build.

Faithful to ../shared/design/k8s-datapaths.md §4 (flannel's pkg/backend/{vxlan,hostgw},
the CNI bridge and host-local plugins):

- every node has `eth0` on the underlay, a bridge in a switch namespace (an L2 segment,
  as minikube's docker network is), and `net.ipv4.ip_forward = 1`;
- the node's pod subnet is a lease of `subnet_len` bits from `pod_cidr`, in node order
  (10.244.0.0/24 for the first node, as minikube's controller-manager hands them out);
- `cni0` is the bridge with the subnet's `.1` as the pods' gateway; each pod's `eth0` is a
  veth into it, addresses are handed out from `.2` like host-local does, and the pod's
  default route goes via `.1` (isDefaultGateway);
- backend **vxlan**: `flannel.1` (VNI 1, UDP 8472, local = node IP, dev eth0, nolearning,
  MTU = underlay − 50, address = the lease's network address as /32) and, per remote node
  in order, neighbour `10.244.Y.0 lladdr VtepMAC`, FDB `VtepMAC dst nodeIP`, route
  `10.244.Y.0/24 via 10.244.Y.0 dev flannel.1 onlink`. Pods' MTU is the vxlan's.
- backend **host-gw**: per remote node, `10.244.Y.0/24 via nodeIP dev eth0`.
- backend **ipip** (Calico's IPIP mode, projectcalico/calico felix's and confd's): the ipip
  module's fallback device `tunl0`, up, MTU = underlay − 20 (the outer IPv4 header),
  address = the lease's network address as /32 (Calico's tunnel address, from the node's
  block); per remote node `10.244.Y.0/24 via nodeIP dev tunl0 onlink` (BIRD's route: the
  gateway is the outer destination). Pods' MTU is tunl0's. The pods stay on cni0, as
  with flannel (Calico's own veths without a bridge are not modelled).

flanneld lets the kernel pick flannel.1's MAC and publishes it in the node's annotation;
netlab derives it from the node IP (0e:fa:<IP bytes>) so the same lab always builds the
same neighbour and FDB entries.

The result is plain `nodes:` a user could have written; `netlab render` prints it. Problems
with the cluster section itself are reported here, at their key in `cluster:`.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from netlab import ipcache
from netlab.expand.policy import BRIDGE_NF, PolicyPod
from netlab.expand.services import Addr, Net, PodAddress, ProxyFragment, ServicePortView
from netlab.lab.model import (
    IFNAMSIZ,
    Bridge,
    Cluster,
    ClusterNode,
    ClusterPod,
    Fdb,
    Ipip,
    Lab,
    Neighbor,
    NftRuleset,
    Node,
    PeerEnd,
    Route,
    Veth,
    Vxlan,
)
from netlab.lab.source import Complaint, Path

VXLAN_DEV = "flannel.1"
VXLAN_DEV_V6 = "flannel-v6.1"  # flannel's device for the IPv6 pod network (EnableIPv6)
CNI_BRIDGE = "cni0"
SWITCH_BRIDGE = "br0"
IPIP_DEV = "tunl0"  # the ipip module's fallback device, which Calico uses
IPIP_OVERHEAD = 20  # the outer IPv4 header: Calico's MTU − 20
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8: flannel's MTU − 50
VXLAN_OVERHEAD_V6 = 70  # the same over an IPv6 underlay (outer header 40): flannel's MTU − 70
MIN_MTU = {4: 68, 6: 1280}  # what each family's pods need at least (RFC 791, RFC 8200)
DEFAULT_SUBNET_LEN = {4: 24, 6: 64}  # flannel's SubnetLen and IPv6SubnetLen
FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}

# Fields every node and pod carry from `Node`, copied through from the cluster section.
_NODE_FIELDS = tuple(Node.model_fields)


@dataclass(frozen=True)
class Expansion:
    """An expanded lab, what was wrong with the section it came from, and where each
    generated node was written (so a later problem points into `cluster:`)."""

    lab: Lab
    complaints: list[Complaint] = field(default_factory=list)
    origins: dict[Path, Path] = field(default_factory=dict)
    layout: ClusterLayout | None = None  # who is where, when the lab had a `cluster:`


@dataclass(frozen=True)
class ClusterLayout:
    """Facts of an expanded cluster that its plain nodes no longer say, for views of the
    lab (netlab graph): the underlay switch, each cluster node's pods, the services."""

    switch: str
    pods: dict[str, tuple[str, ...]]  # cluster node → its pods, in placement order
    services: tuple[ServicePortView, ...] = ()
    proxy_mode: str = ""  # kube-proxy's, which programs the services
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # pod → its labels (policies select by them)
    namespaces: dict[str, str] = field(default_factory=dict)  # pod → its Kubernetes namespace


def cluster_data(layout: ClusterLayout, pod_addresses: Mapping[str, str]) -> dict[str, Any]:
    """The cluster as `netlab status` shows it (and the state file keeps it): each Service
    with its cluster IP and ports, each port's node port and endpoints; each pod's
    namespace, node and address (pod_addresses: pod → its address)."""
    services: dict[str, dict[str, Any]] = {}
    for sp in layout.services:
        svc = services.setdefault(
            f"{sp.namespace}/{sp.service}",
            {"name": f"{sp.namespace}/{sp.service}", "cluster_ip": sp.cluster_ip, "ports": []},
        )
        svc["ports"].append(
            {
                "name": sp.port_name,
                "protocol": sp.protocol,
                "port": sp.port,
                "node_port": sp.node_port,
                "endpoints": [
                    {"pod": ep.pod, "node": ep.node, "address": ep.address, "port": ep.port} for ep in sp.endpoints
                ],
            }
        )
    pods = [
        {"pod": pod, "namespace": layout.namespaces.get(pod, ""), "node": node, "address": pod_addresses.get(pod)}
        for node, names in layout.pods.items()
        for pod in names
    ]
    return {"proxy_mode": layout.proxy_mode, "services": list(services.values()), "pods": pods}


@dataclass
class PlacedPod:
    """A pod of the cluster section (a replica: `NAME-i`), on its node with its address."""

    name: str
    spec: ClusterPod
    path: Path
    node: str = ""
    address: Addr | None = None


def ifname_for(prefix: str, name: str) -> str:
    """`prefix + name` when that is a valid interface name; else prefix + a short hash of
    the name (the CNI plugins name host veths `veth` + 8 hex digits too)."""
    candidate = prefix + name
    if len(candidate) <= IFNAMSIZ and "." not in name:
        return candidate
    return prefix + hashlib.sha1(name.encode()).hexdigest()[: min(8, IFNAMSIZ - len(prefix))]


def vtep_mac(address: Addr) -> str:
    """A locally administered unicast MAC derived from the node's IP (see module docstring):
    its four bytes, or an IPv6 address's last four."""
    return "0e:fa:" + ":".join(f"{b:02x}" for b in address.packed[-4:])


def subnet_len(cluster: Cluster) -> int:
    """The lease length: as written, else flannel's default for the pods' family."""
    family = ipcache.ip_network(cluster.pod_cidr).version
    return cluster.subnet_len if cluster.subnet_len is not None else DEFAULT_SUBNET_LEN[family]


def vxlan_overhead(cluster: Cluster) -> int:
    return VXLAN_OVERHEAD if ipcache.ip_network(cluster.underlay.subnet).version == 4 else VXLAN_OVERHEAD_V6


def vxlan_dev(cluster: Cluster) -> str:
    return VXLAN_DEV if ipcache.ip_network(cluster.pod_cidr).version == 4 else VXLAN_DEV_V6


@dataclass(frozen=True)
class Placement:
    """The cluster section laid out: each node's underlay address and pod subnet, each
    pod's node and address."""

    cluster: Cluster
    addresses: dict[str, Addr]
    subnets: dict[str, Net]
    pods: list[PlacedPod]

    @property
    def family(self) -> int:
        """The pods' IP family."""
        return ipcache.ip_network(self.cluster.pod_cidr).version

    def service_pods(self) -> list[PodAddress]:
        return [PodAddress(p.name, p.node, str(p.address), dict(p.spec.labels), p.spec.namespace) for p in self.pods]

    def policy_pods(self) -> list[PolicyPod]:
        return [PolicyPod(p.name, p.node, str(p.address), p.spec.namespace, dict(p.spec.labels)) for p in self.pods]

    def layout(self, services: list[ServicePortView]) -> ClusterLayout:
        pods = {name: tuple(p.name for p in self.pods if p.node == name) for name in self.cluster.nodes}
        return ClusterLayout(
            self.cluster.underlay.switch,
            pods,
            tuple(services),
            self.cluster.proxy_mode,
            {p.name: dict(p.spec.labels) for p in self.pods},
            {p.name: p.spec.namespace for p in self.pods},
        )


def place(lab: Lab, cluster: Cluster, complaints: list[Complaint]) -> Placement:
    """Hand out node addresses and pod subnets (flannel's leases), put pods on nodes (as a
    scheduler would) and give them addresses (as host-local does). Problems go to
    `complaints`; the placement is complete only without them. The section's networks
    must have passed check_networks."""
    pods = list(_pods(cluster))
    complaints += _check_names(lab, cluster, pods)
    addresses = _node_addresses(cluster, complaints)
    subnets = _node_subnets(cluster, complaints)
    _place_pods(cluster, pods, complaints)
    _pod_addresses(subnets, pods, complaints)
    complaints += _check_user_links(cluster, pods)
    return Placement(cluster, addresses, subnets, pods)


def explicit_nodes(
    lab: Lab, placement: Placement, proxies: Mapping[str, ProxyFragment], policies: Mapping[str, str]
) -> tuple[dict[str, Node], dict[Path, Path]]:
    """The underlay switch, every cluster node with what kube-proxy (`proxies`) and the
    policies (a ruleset per node) put on it, every pod, then the lab's plain nodes; and
    where in `cluster:` each generated node was written."""
    cluster = placement.cluster
    switch = cluster.underlay.switch
    nodes = {switch: _switch_node(lab, cluster)}
    origins: dict[Path, Path] = {("nodes", switch): ("cluster", "underlay")}
    for name in cluster.nodes:
        nodes[name] = _cluster_node(placement, name, proxies[name], policies.get(name))
        origins[("nodes", name)] = ("cluster", "nodes", name)
    for pod in placement.pods:
        nodes[pod.name] = _pod_node(placement, pod)
        origins[("nodes", pod.name)] = pod.path
    nodes.update(lab.nodes)
    return nodes, origins


def _pod_mtu(cluster: Cluster) -> int:
    overhead = {"vxlan": vxlan_overhead(cluster), "ipip": IPIP_OVERHEAD}.get(cluster.backend, 0)
    return cluster.underlay.mtu - overhead


def _switch_node(lab: Lab, cluster: Cluster) -> Node:
    ports = {name: ifname_for("", name) for name in cluster.nodes}  # each node's eth0 plugs in here
    # A plain node's veth whose peer is on the switch is a cable plugged into it: a port too.
    plugged = _plugged_in(lab, cluster.underlay.switch)
    return Node(
        description="the underlay switch, one L2 segment that joins the eth0 of every node",
        links={
            SWITCH_BRIDGE: Bridge(kind="bridge", mtu=cluster.underlay.mtu, ports=[*ports.values(), *plugged]),
            **{port: PeerEnd(mtu=cluster.underlay.mtu) for port in ports.values()},
        },
    )


def _cluster_node(placement: Placement, name: str, proxy: ProxyFragment, policy: str | None) -> Node:
    cluster, family = placement.cluster, placement.family
    spec = cluster.nodes[name]
    address, subnet = placement.addresses[name], placement.subnets[name]
    links = {**_node_links(placement, name), **proxy.links}
    routes, neighbors, fdb = _routes_to_other_nodes(placement, name)
    sysctls = {FORWARDING[family]: 1, **proxy.sysctls}  # e.g. IPVS mode's net.ipv4.vs.*
    nftables = list(proxy.nftables)
    if policy is not None:  # after kube-proxy's rules; bridged pod-to-pod traffic must meet them too
        nftables.append(NftRuleset(ruleset=policy))
        sysctls[BRIDGE_NF[family]] = 1
    description = spec.description or f"Kubernetes node {address}, pod subnet {subnet} ({cluster.backend})"
    return _merge(
        spec,
        description=description,
        links=links,
        routes=routes,
        neighbors=neighbors,
        fdb=fdb,
        sysctls=sysctls,
        ipsets=list(proxy.ipsets),
        nftables=nftables,
        iptables=list(proxy.iptables),
        ipvs=list(proxy.ipvs),
    )


def _node_links(placement: Placement, name: str) -> dict[str, object]:
    """eth0 on the underlay switch, cni0, flannel's vxlan device, a host veth per pod."""
    cluster = placement.cluster
    address, subnet = placement.addresses[name], placement.subnets[name]
    mtu = _pod_mtu(cluster)
    underlay_len = ipcache.ip_network(cluster.underlay.subnet).prefixlen
    eth0 = Veth(
        peer=f"{cluster.underlay.switch}:{ifname_for('', name)}",
        mtu=cluster.underlay.mtu,
        addresses=[f"{address}/{underlay_len}"],
    )
    if cluster.underlay.netem is not None:  # set only when given: `netlab render` writes no `netem: null`
        eth0 = eth0.model_copy(update={"netem": cluster.underlay.netem})
    links: dict[str, object] = {
        "eth0": eth0,
        CNI_BRIDGE: Bridge(kind="bridge", mtu=mtu, addresses=[f"{subnet.network_address + 1}/{subnet.prefixlen}"]),
    }
    if cluster.backend == "ipip":  # made by the kernel in every namespace: netlab sets it up
        links[IPIP_DEV] = Ipip(kind="ipip", mtu=mtu, addresses=[f"{subnet.network_address}/{subnet.max_prefixlen}"])
    if cluster.backend == "vxlan":
        links[vxlan_dev(cluster)] = Vxlan(
            kind="vxlan",
            vni=cluster.vni,
            port=cluster.port,
            local=str(address),
            dev="eth0",
            learning=False,
            mtu=mtu,
            mac=vtep_mac(address),
            addresses=[f"{subnet.network_address}/{subnet.max_prefixlen}"],
        )
    for pod in placement.pods:
        if pod.node == name:
            # the CNI bridge plugin's hairpinMode (flannel's delegate sets it): a pod can reach
            # itself through a service VIP when the node DNATs the packet back out its port
            links[_host_veth(pod.name)] = Veth(peer=f"{pod.name}:eth0", master=CNI_BRIDGE, mtu=mtu, hairpin=True)
    return links


def _routes_to_other_nodes(placement: Placement, name: str) -> tuple[list[Route], list[Neighbor], list[Fdb]]:
    """What flanneld writes for every other node: with vxlan a neighbour, an FDB entry and
    a route into the tunnel; with host-gw a route via the node; with ipip (Calico's BIRD) a
    route via the node into tunl0."""
    cluster = placement.cluster
    vxlan = vxlan_dev(cluster)
    routes: list[Route] = []
    neighbors: list[Neighbor] = []
    fdb: list[Fdb] = []
    for other in cluster.nodes:
        if other == name:
            continue
        far, far_subnet = placement.addresses[other], placement.subnets[other]
        if cluster.backend == "vxlan":
            vtep = str(far_subnet.network_address)
            neighbors.append(Neighbor(to=vtep, lladdr=vtep_mac(far), dev=vxlan))
            fdb.append(Fdb(lladdr=vtep_mac(far), dev=vxlan, dst=str(far)))
            routes.append(Route(to=str(far_subnet), via=vtep, dev=vxlan, onlink=True))
        elif cluster.backend == "ipip":
            routes.append(Route(to=str(far_subnet), via=str(far), dev=IPIP_DEV, onlink=True))
        else:
            routes.append(Route(to=str(far_subnet), via=str(far), dev="eth0"))
    return routes, neighbors, fdb


def _pod_node(placement: Placement, pod: PlacedPod) -> Node:
    subnet = placement.subnets[pod.node]
    labels = ", ".join(f"{k}={v}" for k, v in pod.spec.labels.items())
    where = f"{pod.spec.namespace}/{pod.name}" if pod.spec.namespace != "default" else ""  # as kubectl says it
    description = pod.spec.description or f"pod {where + ' ' if where else ''}on {pod.node}" + (
        f" ({labels})" if labels else ""
    )
    return _merge(
        pod.spec,
        description=description,
        links={"eth0": PeerEnd(mtu=_pod_mtu(placement.cluster), addresses=[f"{pod.address}/{subnet.prefixlen}"])},
        routes=[Route(to="default", via=str(subnet.network_address + 1))],
    )


def _plugged_in(lab: Lab, switch: str) -> list[str]:
    """Switch-side names of the veths plain nodes point at the switch (`peer: underlay:IF`)."""
    return [
        link.peer.partition(":")[2]
        for node in lab.nodes.values()
        for link in node.links.values()
        if isinstance(link, Veth) and link.peer.partition(":")[0] == switch
    ]


def _host_veth(pod: str) -> str:
    return ifname_for("veth", pod)


def _merge(spec: Node, *, description: str, links: dict[str, object], routes: list[Route], **generated: Any) -> Node:
    """A node: what the user wrote for it in `cluster:` first (so their indices stay
    theirs in error messages), then what expansion generates. `generated` holds more Node
    fields: a list goes after the user's entries (e.g. kube-proxy's dump after theirs, which
    --noflush keeps), a dict under theirs (their sysctl wins)."""
    given = {k: getattr(spec, k) for k in _NODE_FIELDS if k in spec.model_fields_set}
    given["description"] = description
    given["links"] = {**links, **spec.links}  # user links never collide (_check_user_links)
    given["routes"] = [*spec.routes, *routes]
    for key, value in generated.items():
        if not value:
            continue
        mine = getattr(spec, key)
        given[key] = {**value, **mine} if isinstance(value, dict) else [*mine, *value]
    return Node.model_validate(given)


# ---------------------------------------------------------------- the section's own rules


def check_networks(cluster: Cluster) -> Iterator[Complaint]:
    pod_cidr = ipcache.ip_network(cluster.pod_cidr)
    underlay = ipcache.ip_network(cluster.underlay.subnet)
    family, length = pod_cidr.version, subnet_len(cluster)
    longest = pod_cidr.max_prefixlen - 2  # room for the network address, the gateway and a pod
    if length > longest:
        yield (
            ("cluster", "subnet_len"),
            (
                f"subnet_len {length} leaves no room for a gateway and pods; use at most {longest} "
                f"(flannel's default is {DEFAULT_SUBNET_LEN[family]})"
            ),
        )
    elif length <= pod_cidr.prefixlen:
        yield (
            ("cluster", "subnet_len"),
            (
                f"subnet_len {length} must be longer than pod_cidr's /{pod_cidr.prefixlen}: each node "
                f"leases a /{length} out of {pod_cidr} (flannel's default is 24 in a /16, 64 for IPv6)"
            ),
        )
    if underlay.prefixlen > underlay.max_prefixlen - 2:
        yield (
            ("cluster", "underlay", "subnet"),
            (f"underlay subnet {underlay} has no room for nodes; use e.g. 192.168.49.0/24"),
        )
    elif pod_cidr.version == underlay.version and pod_cidr.overlaps(underlay):
        yield (
            ("cluster", "pod_cidr"),
            (
                f"pod_cidr {pod_cidr} overlaps the underlay subnet {underlay}; the nodes could not tell "
                "pods from nodes: pick disjoint networks (e.g. 10.244.0.0/16 and 192.168.49.0/24)"
            ),
        )
    if cluster.backend == "ipip" and 6 in (family, underlay.version):
        yield (
            ("cluster", "backend"),
            (
                f"ipip carries IPv4 in IPv4 (Calico's IPIP mode); this cluster's pods are IPv{family} over an "
                f"IPv{underlay.version} underlay: use backend vxlan (or host-gw on one family)"
            ),
        )
    if cluster.backend == "ipip" and cluster.underlay.mtu - IPIP_OVERHEAD < MIN_MTU[family]:
        yield (
            ("cluster", "underlay", "mtu"),
            f"with ipip the pods' MTU is the underlay's minus {IPIP_OVERHEAD}; {cluster.underlay.mtu} leaves "
            f"{cluster.underlay.mtu - IPIP_OVERHEAD}, below IPv4's {MIN_MTU[4]}",
        )
    if cluster.backend == "host-gw" and underlay.version != family:
        yield (
            ("cluster", "underlay", "subnet"),
            (
                f"host-gw routes IPv{family} pod subnets via the nodes' underlay addresses, which are "
                f"IPv{underlay.version} here; use an IPv{family} underlay subnet, or backend vxlan"
            ),
        )
    overhead = vxlan_overhead(cluster)
    if cluster.backend == "vxlan" and cluster.underlay.mtu - overhead < MIN_MTU[family]:
        yield (
            ("cluster", "underlay", "mtu"),
            (
                f"with vxlan over IPv{underlay.version} the pods' MTU is the underlay's minus {overhead}; "
                f"{cluster.underlay.mtu} leaves {cluster.underlay.mtu - overhead}, below IPv{family}'s {MIN_MTU[family]}"
            ),
        )


def _pods(cluster: Cluster) -> Iterator[PlacedPod]:
    for name, spec in cluster.pods.items():
        path: Path = ("cluster", "pods", name)
        if spec.replicas is None:
            yield PlacedPod(name, spec, path)
        else:
            for i in range(spec.replicas):
                yield PlacedPod(f"{name}-{i}", spec, path)


def _check_names(lab: Lab, cluster: Cluster, pods: list[PlacedPod]) -> Iterator[Complaint]:
    """Nodes, pods, the switch and plain `nodes:` share one namespace of node names."""
    taken: dict[str, str] = {}

    def claim(name: str, what: str, path: Path) -> Iterator[Complaint]:
        if name in taken:
            yield path, f"{what} {name!r} has the name of {taken[name]}; every node and pod needs its own name"
        else:
            taken[name] = f"{what} {name!r}"

    yield from claim(cluster.underlay.switch, "the underlay switch", ("cluster", "underlay", "switch"))
    for name in cluster.nodes:
        yield from claim(name, "cluster node", ("cluster", "nodes", name))
    for pod in pods:
        if len(pod.name) > 48:
            yield pod.path, f"pod name {pod.name!r} is {len(pod.name)} characters; at most 48"
        yield from claim(pod.name, "pod", pod.path)
    for name in lab.nodes:
        yield from claim(name, "node", ("nodes", name))
    ports: dict[str, str] = {}
    for name in cluster.nodes:
        port = ifname_for("", name)
        if port in ports or port == SWITCH_BRIDGE:
            yield (
                ("cluster", "nodes", name),
                (f"node {name!r} would get switch port {port!r}, as {ports.get(port, 'the bridge')} does; rename one"),
            )
        ports[port] = name
    for name, node in lab.nodes.items():
        for ifname, link in node.links.items():
            pnode, _, pif = link.peer.partition(":") if isinstance(link, Veth) else ("", "", "")
            if pnode == cluster.underlay.switch and (pif in ports or pif == SWITCH_BRIDGE):
                owner = "its bridge" if pif == SWITCH_BRIDGE else f"node {ports[pif]}'s port"
                yield (
                    ("nodes", name, "links", ifname, "peer"),
                    (
                        f"{pif} on the underlay switch is {owner}; plug in with another name, "
                        f"e.g. `peer: {pnode}:{name}`"
                    ),
                )
    veths: dict[str, str] = {}
    for pod in pods:
        veth = _host_veth(pod.name)
        if veth in veths:
            yield pod.path, f"pod {pod.name!r} would get host veth {veth!r}, as {veths[veth]!r} does; rename one"
        veths[veth] = pod.name


def _hosts(net: Net, first: int) -> Iterator[Addr]:
    """Usable addresses from the `first`-th on (no network or broadcast address)."""
    top = net.num_addresses - 1 if net.prefixlen < 31 else net.num_addresses
    for i in range(first, top):
        yield net.network_address + i


def _node_addresses(cluster: Cluster, complaints: list[Complaint]) -> dict[str, Addr]:
    underlay = ipcache.ip_network(cluster.underlay.subnet)
    given: dict[Addr, str] = {}
    out: dict[str, Addr] = {}
    for name, spec in cluster.nodes.items():
        if spec.address is None:
            continue
        path: Path = ("cluster", "nodes", name, "address")
        addr = ipcache.ip_address(spec.address)
        if addr not in underlay:
            complaints.append((path, f"address {addr} is not in the underlay subnet {underlay}"))
        elif addr == underlay.network_address or (underlay.version == 4 and addr == underlay.broadcast_address):
            which = "network" if addr == underlay.network_address else "broadcast"
            complaints.append((path, f"{addr} is the underlay's {which} address; pick a host address"))
        elif addr in given:
            complaints.append((path, f"address {addr} is also node {given[addr]}'s"))
        else:
            given[addr] = name
            out[name] = addr
    free = (a for a in _hosts(underlay, 2) if a not in given)  # .1 is the network's gateway, as in minikube
    for name, spec in cluster.nodes.items():
        if spec.address is None:
            lease = next(free, None)
            if lease is None:
                complaints.append(
                    (
                        ("cluster", "nodes", name),
                        (
                            f"the underlay subnet {underlay} has no address left for node {name} (nodes get .2 "
                            "onwards); use a larger subnet"
                        ),
                    )
                )
                continue
            out[name] = lease
    return out


def _node_subnets(cluster: Cluster, complaints: list[Complaint]) -> dict[str, Net]:
    pod_cidr = ipcache.ip_network(cluster.pod_cidr)
    length = subnet_len(cluster)
    given: dict[str, Net] = {}
    for name, spec in cluster.nodes.items():
        if spec.pod_cidr is None:
            continue
        path: Path = ("cluster", "nodes", name, "pod_cidr")
        net = ipcache.ip_network(spec.pod_cidr)
        clash = next((other for other, n in given.items() if n.overlaps(net)), None)
        if net.version != pod_cidr.version or not net.subnet_of(pod_cidr):  # type: ignore[arg-type]
            complaints.append((path, f"pod_cidr {net} is not inside the cluster's pod_cidr {pod_cidr}"))
        elif net.prefixlen > net.max_prefixlen - 2:
            complaints.append(
                (path, f"pod_cidr {net} has no room for a gateway and pods; use at most a /{net.max_prefixlen - 2}")
            )
        elif clash:
            complaints.append(
                (path, f"pod_cidr {net} overlaps node {clash}'s {given[clash]}; each node needs its own pod subnet")
            )
        else:
            given[name] = net
    leases = (s for s in pod_cidr.subnets(new_prefix=length) if not any(s.overlaps(n) for n in given.values()))
    out: dict[str, Net] = {}
    for name, spec in cluster.nodes.items():
        if name in given:
            out[name] = given[name]
        elif spec.pod_cidr is None:
            lease = next(leases, None)
            if lease is None:
                total = 2 ** (length - pod_cidr.prefixlen)
                complaints.append(
                    (
                        ("cluster", "nodes", name),
                        (
                            f"pod_cidr {pod_cidr} holds {total} /{length} lease{'s' if total != 1 else ''}, "
                            f"none left for node {name}; use a larger pod_cidr or a longer subnet_len"
                        ),
                    )
                )
                continue
            out[name] = lease
    return out


def _place_pods(cluster: Cluster, pods: list[PlacedPod], complaints: list[Complaint]) -> None:
    """Pods with `node:` go there; the others are spread like a scheduler would: each to
    the node with the fewest pods so far (the first in file order on a tie)."""
    load = dict.fromkeys(cluster.nodes, 0)
    for pod in pods:
        if pod.spec.node is None:
            continue
        if pod.spec.node not in cluster.nodes:
            close = difflib.get_close_matches(pod.spec.node, list(cluster.nodes), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            complaints.append(
                (
                    (*pod.path, "node"),
                    (
                        f"node {pod.spec.node!r} is not a cluster node; {hint}(cluster nodes: {', '.join(cluster.nodes)})"
                    ),
                )
            )
            continue
        pod.node = pod.spec.node
        load[pod.node] += 1
    for pod in pods:
        if pod.spec.node is None:
            pod.node = min(load, key=lambda n: load[n])  # min() keeps the first of equals
            load[pod.node] += 1


def _pod_addresses(subnets: dict[str, Net], pods: list[PlacedPod], complaints: list[Complaint]) -> None:
    taken: dict[Addr, str] = {}
    pods = [p for p in pods if p.node in subnets]  # the others have a problem reported already
    for pod in pods:
        if pod.spec.address is None:
            continue
        path: Path = (*pod.path, "address")
        subnet = subnets[pod.node]
        addr = ipcache.ip_address(pod.spec.address)
        if pod.spec.replicas is not None and pod.spec.replicas > 1:
            complaints.append((path, f"{pod.spec.replicas} replicas cannot share one address; drop `address:`"))
            return
        if addr not in subnet:
            complaints.append((path, f"address {addr} is not in node {pod.node}'s pod subnet {subnet}"))
        elif addr in (subnet.network_address, subnet.network_address + 1, subnet.broadcast_address):
            what = {
                subnet.network_address: "the subnet's network address (the vxlan device's, or tunl0's)",
                subnet.network_address + 1: "cni0's (the pods' gateway)",
                subnet.broadcast_address: "the broadcast address",
            }[addr]
            complaints.append((path, f"{addr} is {what}; pods get {subnet.network_address + 2} onwards"))
        elif addr in taken:
            complaints.append((path, f"address {addr} is also pod {taken[addr]}'s"))
        else:
            taken[addr] = pod.name
            pod.address = addr
    free = {node: (a for a in _hosts(net, 2) if a not in taken) for node, net in subnets.items()}
    for pod in pods:
        if pod.spec.address is None:
            pod.address = next(free[pod.node], None)
            if pod.address is None:
                count = sum(1 for p in pods if p.node == pod.node)
                subnet = subnets[pod.node]
                complaints.append(
                    (
                        pod.path,
                        (
                            f"node {pod.node}'s pod subnet {subnet} is full: it has "
                            f"{_pods_word(subnet.num_addresses - 3)} (.2 onwards) and {count} are placed there; use a "
                            "shorter subnet_len, or place pods on other nodes"
                        ),
                    )
                )
                return


def _pods_word(n: int) -> str:
    return f"room for {n} pod{'s' if n != 1 else ''}"


def _check_user_links(cluster: Cluster, pods: list[PlacedPod]) -> Iterator[Complaint]:
    """What a user adds to a node or pod may not take a name expansion uses."""
    generated = {
        "eth0": "the underlay link",
        CNI_BRIDGE: "the CNI bridge",
        VXLAN_DEV: "flannel's vxlan",
        VXLAN_DEV_V6: "flannel's IPv6 vxlan",
    }
    if cluster.backend == "ipip":
        generated[IPIP_DEV] = "the ipip module's fallback device, Calico's tunnel"
    veths = {_host_veth(p.name): p.name for p in pods}
    for name, node in cluster.nodes.items():
        for ifname in node.links:
            what = generated.get(ifname) or (f"the host end of pod {veths[ifname]}'s veth" if ifname in veths else None)
            if what:
                yield (
                    ("cluster", "nodes", name, "links", ifname),
                    (f"{ifname} is {what}, which the cluster creates; name your link otherwise"),
                )
    seen: set[Path] = set()
    for pod in pods:
        if pod.path not in seen and "eth0" in pod.spec.links:
            yield (
                (*pod.path, "links", "eth0"),
                ("eth0 is the pod's veth into cni0, which the cluster creates; name your link otherwise"),
            )
        seen.add(pod.path)


__all__ = ["ClusterNode", "Expansion", "Placement", "explicit_nodes", "ifname_for", "place", "vtep_mac"]
