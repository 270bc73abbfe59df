"""The lab model: immutable, validated, one class per kind of lab object.

Field validators check a value on its own (an address parses, a name fits IFNAMSIZ; see
values.py); cross-object rules (peers agree, routes name existing devices) live in
`consistency.py`. Every model rejects unknown keys, so a typo is an error, never a silently
ignored key.
"""

import json
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    SerializeAsAny,
    Tag,
    field_validator,
    model_validator,
)

from netlab.lab.checks import Check, ServeSpec
from netlab.lab.ipset import IpSet
from netlab.lab.ipvs import IpvsService
from netlab.lab.netem import Netem
from netlab.lab.policy import DEFAULT_NAMESPACE, Labels, Namespace, NamespaceName, NetworkPolicy, PolicyName
from netlab.lab.values import (
    IFNAMSIZ,
    Base,
    Dscp,
    Dsfield,
    Feature,
    FlowLabel,
    IfName,
    InterfaceAddress,
    IpAddress,
    LabName,
    MacAddress,
    Mark,
    Mask16,
    Mtu,
    NodeName,
    Number,
    PeerRef,
    PortRange,
    Prefix,
    TableRef,
    UidRange,
    split_masked,
)

__all__ = ["IFNAMSIZ", "Base", "Check", "Feature", "NodeName"]


# ---------------------------------------------------------------- links


Vid = Annotated[int, Field(ge=1, le=4094)]


class BridgeVlans(Base):
    """A bridge port's VLANs, with the bridge's `vlan_filtering: true` (`bridge vlan add dev
    PORT vid N [pvid] [untagged]`): on top of the bridge's default_pvid (1, unless the bridge
    says `default_pvid: 0`)."""

    pvid: Vid | None = None  # untagged frames coming in belong to it, and it leaves untagged: an access port
    untagged: list[Vid] = []  # more VLANs that leave untagged
    tagged: list[Vid] = []  # VLANs that come and leave tagged: a trunk

    @model_validator(mode="after")
    def _each_once(self) -> Self:
        listed = [*([self.pvid] if self.pvid is not None else []), *self.untagged, *self.tagged]
        twice = sorted({v for v in listed if listed.count(v) > 1})
        if twice:
            raise ValueError(f"VLAN {twice[0]} is listed twice; a VLAN is the pvid, untagged or tagged, once")
        if not listed:
            raise ValueError("lists no VLAN: give `pvid:`, `untagged:` or `tagged:` (or leave `vlans:` out)")
        return self


class _LinkCommon(Base):
    mtu: Mtu | None = None
    mac: MacAddress | None = None
    up: bool = True
    addresses: list[InterfaceAddress] = []
    master: IfName | None = None  # a bridge or a vrf in the same node
    hairpin: bool = False  # as a bridge port: frames may leave by the port they came in (CNI hairpinMode)
    netem: Netem | None = None  # what its root qdisc does to what it sends: delay, loss, … (netlab.lab.netem)
    vlans: BridgeVlans | None = None  # as a port of a vlan_filtering bridge (or that bridge itself)


class Veth(_LinkCommon):
    """One end of a veth pair; the other end is `peer` (NODE:IFNAME) and is created with it."""

    kind: Literal["veth"] = "veth"
    peer: PeerRef


class PeerEnd(_LinkCommon):
    """Settings for an interface that exists because of something else: the far end of a
    veth declared in another node, or the namespace's own `lo`."""


class Bridge(_LinkCommon):
    kind: Literal["bridge"]
    ports: list[IfName] = []
    stp: bool = False
    vlan_filtering: bool = False  # the ports' `vlans:` decide which frames pass (802.1Q bridge)
    default_pvid: Annotated[int, Field(ge=0, le=4094)] | None = None  # each port's VLAN until told (1; 0: none)


class Dummy(_LinkCommon):
    kind: Literal["dummy"]


class Vxlan(_LinkCommon):
    kind: Literal["vxlan"]
    vni: Annotated[int, Field(ge=0, le=16777215)]
    port: Annotated[int, Field(ge=1, le=65535)] = 8472  # the kernel's default, which flannel relies on
    local: IpAddress | None = None
    remote: IpAddress | None = None
    group: IpAddress | None = None
    dev: IfName | None = None
    learning: bool = True
    ttl: Annotated[int, Field(ge=0, le=255)] | None = None
    # `host`: made from the host's own network namespace and placed in the node, so its UDP
    # socket stays in the host's: the tunnel of a link between two machines (netlab.multihost)
    underlay: Literal["host"] | None = None


class _IpTunnel(_LinkCommon):
    """An IP tunnel (`ip link add NAME type ipip|gre|gretap|ip6tnl|ip6gre`): packets sent
    through it go out wrapped in an outer IP header from `local` to `remote` (or, with
    neither, to the gateway of the route that chose the tunnel: the fallback devices'
    way, as Calico's tunl0). `external`: a flow-based device (collect_metadata) whose
    endpoints come with each packet (eBPF, OVS), and which takes none of its own."""

    kind: str
    local: IpAddress | None = None
    remote: IpAddress | None = None
    dev: IfName | None = None  # the underlay device the tunnel is bound to
    ttl: Annotated[int, Field(ge=0, le=255)] | None = None  # None: the kernel's (0: inherit; IPv6: 64)
    external: bool = False


class Ipip(_IpTunnel):
    kind: Literal["ipip"]


class Gre(_IpTunnel):
    kind: Literal["gre"]
    key: Annotated[int, Field(ge=0, lt=2**32)] | None = None  # the GRE key, both ways (`key N`)


class Gretap(_IpTunnel):
    """GRE carrying Ethernet frames: a device that can be a bridge port."""

    kind: Literal["gretap"]
    key: Annotated[int, Field(ge=0, lt=2**32)] | None = None


class Ip6tnl(_IpTunnel):
    """IPv4 or IPv6 over IPv6 (mode `any`)."""

    kind: Literal["ip6tnl"]


class Ip6gre(_IpTunnel):
    kind: Literal["ip6gre"]
    key: Annotated[int, Field(ge=0, lt=2**32)] | None = None


class Geneve(_LinkCommon):
    """A Geneve device (`ip link add NAME type geneve id VNI remote ADDR`), as OVN and
    Antrea use: Ethernet over UDP, like a vxlan, but to one far end (or `external`)."""

    kind: Literal["geneve"]
    vni: Annotated[int, Field(ge=0, le=16777215)] | None = None
    remote: IpAddress | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 6081  # IANA's, the kernel's default
    ttl: Annotated[int, Field(ge=0, le=255)] | None = None
    external: bool = False


class Vlan(_LinkCommon):
    """An 802.1Q (or 802.1ad) VLAN on another link of the node (`ip link add link DEV
    NAME type vlan id N`): what it sends leaves `dev` tagged with `id`."""

    kind: Literal["vlan"]
    dev: IfName  # the link it is on, as a vxlan's `dev:` is its underlay
    id: Annotated[int, Field(ge=1, le=4094)]
    protocol: Literal["802.1Q", "802.1ad"] = "802.1Q"


class Vrf(_LinkCommon):
    """A kernel VRF device (`ip link add NAME type vrf table N`): the interfaces whose
    `master:` it is route in its table (their connected and local routes move there), and
    the kernel adds the `l3mdev` rule (priority 1000) that sends their packets to it."""

    kind: Literal["vrf"]
    table: TableRef  # a name from `tables:` or a number


LINK_KINDS = ("veth", "bridge", "dummy", "vxlan", "vrf", "ipip", "gre", "gretap", "ip6tnl", "ip6gre", "geneve", "vlan")
TUNNEL_KINDS = ("ipip", "gre", "gretap", "ip6tnl", "ip6gre")  # _IpTunnel's
# The devices a tunnel kind's module makes in every namespace once it is loaded (the
# "fallback" devices that receive what no other tunnel of theirs claims), name → its kind.
# A lab that uses the kind anywhere may configure them by name in any node.
FALLBACK_DEVICES: dict[str, dict[str, str]] = {
    "ipip": {"tunl0": "ipip"},
    "gre": {"gre0": "gre", "gretap0": "gretap", "erspan0": "erspan"},  # ip_gre makes all three
    "gretap": {"gre0": "gre", "gretap0": "gretap", "erspan0": "erspan"},
    "ip6tnl": {"ip6tnl0": "ip6tnl"},
    "ip6gre": {"ip6gre0": "ip6gre"},
}


def _link_tag(value: Any) -> str:
    if isinstance(value, dict):
        if "kind" in value:
            return str(value["kind"])
        return "veth" if "peer" in value else "end"
    if isinstance(value, BaseModel):
        return str(getattr(value, "kind", "end"))
    return "end"


Link = Annotated[
    Annotated[Veth, Tag("veth")]
    | Annotated[Bridge, Tag("bridge")]
    | Annotated[Dummy, Tag("dummy")]
    | Annotated[Vxlan, Tag("vxlan")]
    | Annotated[Vrf, Tag("vrf")]
    | Annotated[Ipip, Tag("ipip")]
    | Annotated[Gre, Tag("gre")]
    | Annotated[Gretap, Tag("gretap")]
    | Annotated[Ip6tnl, Tag("ip6tnl")]
    | Annotated[Ip6gre, Tag("ip6gre")]
    | Annotated[Geneve, Tag("geneve")]
    | Annotated[Vlan, Tag("vlan")]
    | Annotated[PeerEnd, Tag("end")],
    Discriminator(_link_tag),
]
LINK_TAGS = frozenset({*LINK_KINDS, "end"})


# ---------------------------------------------------------------- routing


RouteType = Literal["unicast", "blackhole", "unreachable", "prohibit"]


class Route(Base):
    to: Prefix
    via: IpAddress | None = None
    dev: IfName | None = None
    table: TableRef | None = None
    onlink: bool = False
    metric: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    src: IpAddress | None = None
    type: RouteType = "unicast"
    family: Literal[4, 6] | None = None  # only needed for `to: default` with neither via nor src


class Rule(Base):
    """An ip rule (`ip rule add …`): selectors, then what to do with a packet they select."""

    priority: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    not_: bool = Field(default=False, alias="not")  # select what the selectors do not match
    from_: Prefix | None = Field(default=None, alias="from")
    to: Prefix | None = None
    iif: IfName | None = None
    oif: IfName | None = None
    fwmark: Mark | None = None
    ipproto: Literal["tcp", "udp", "icmp", "icmpv6", "sctp"] | Annotated[int, Field(ge=1, le=255)] | None = None
    sport: PortRange | None = None  # 80, or "1024-65535"
    dport: PortRange | None = None
    # The DS field: `tos:` raw, as `ip rule … tos` (old TOS semantics); `dscp:` 0-63, which an
    # IPv4 rule above 7 or with a mask sends as FRA_DSCP (Linux 6.13+, the rule_dscp feature)
    tos: Annotated[Dsfield, Number] | None = None
    dscp: Annotated[Dscp, Number] | None = None
    dscp_mask: Annotated[Dscp, Number] | None = None  # or `dscp: VALUE/MASK` (rule_dscp_mask)
    flowlabel: Annotated[FlowLabel, Number] | None = None  # IPv6: `flowlabel: 0x12345[/0xfffff]`
    flowlabel_mask: Annotated[FlowLabel, Number] | None = None
    sport_mask: Annotated[Mask16, Number] | None = None  # or `sport: 0x0f00/0xff00` (rule_port_mask)
    dport_mask: Annotated[Mask16, Number] | None = None
    uidrange: UidRange | None = None  # the socket owner's uid: 1000, or "1000-1999"
    l3mdev: bool = False  # look up the table of the VRF the packet's device is in
    table: TableRef | None = None
    goto: Annotated[int, Field(ge=1, lt=2**32)] | None = None  # action goto: go on at this priority
    suppress_prefixlength: Annotated[int, Field(ge=0, le=128)] | None = None
    action: Literal["lookup", "blackhole", "unreachable", "prohibit", "goto", "nop"] = "lookup"
    family: Literal[4, 6] | None = None  # needed when neither from nor to gives it; default 4

    @model_validator(mode="before")
    @classmethod
    def _masked(cls, data: Any) -> Any:
        return split_masked(data, ("dscp", "flowlabel", "sport", "dport"))


class Neighbor(Base):
    """A static ARP/NDP entry (`ip neigh replace TO lladdr MAC dev DEV nud permanent`), as
    flanneld writes one per remote node for its VTEP address."""

    to: IpAddress
    lladdr: MacAddress
    dev: IfName


class Fdb(Base):
    """A static forwarding-database entry (`bridge fdb append MAC dev DEV …`). On a vxlan it
    says which underlay address a MAC lives behind (`dst:`, flags `self permanent`, as
    flanneld writes them; 00:00:00:00:00:00 entries are the flood list). On a bridge port
    it pins a MAC to that port (`master static`)."""

    lladdr: Annotated[MacAddress, Field(description="the MAC, or 00:00:00:00:00:00 for flooding")]
    dev: IfName
    dst: IpAddress | None = None


SysctlValue = int | str


# ---------------------------------------------------------------- firewall: nftables and iptables


def _nft_json(value: Any) -> Any:
    """libnftables JSON: a mapping {"nftables": [command, …]}, or the same as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise ValueError(f"is not valid JSON: {err}") from None
    if not isinstance(value, dict) or set(value) != {"nftables"} or not isinstance(value["nftables"], list):
        raise ValueError(
            'expected libnftables JSON, a mapping {"nftables": [...]} (as `nft -j list ruleset` prints it)'
        )
    if not all(isinstance(item, dict) for item in value["nftables"]):
        raise ValueError('every item of "nftables" is a mapping, a command such as {"add": {"table": {…}}}')
    return value


def _exactly_one(entry: BaseModel, keys: tuple[str, ...], what: str) -> None:
    """`keys` as written in the lab file (aliases): exactly one of them must be given."""
    attrs = {info.alias or name: name for name, info in type(entry).model_fields.items()}
    given = [k for k in keys if getattr(entry, attrs[k]) is not None]
    if len(given) != 1:
        options = ", ".join(f"`{k}:`" for k in keys[:-1]) + f" or `{keys[-1]}:`"
        have = f" (this one has {' and '.join(given)})" if given else ""
        raise ValueError(f"{what} needs exactly one of {options}{have}")


class NftRuleset(Base):
    """One nftables ruleset, applied in its node's namespace as `nft -f` applies a file.
    A `file:` is read when the lab is loaded: the loaded lab carries its text (as
    `ruleset:`, or `json:` for a .json file), so the plan and `netlab render` need no file."""

    ruleset: Annotated[str, Field(min_length=1)] | None = None  # nft's own syntax (`nft list ruleset`)
    json_: Annotated[dict[str, Any] | None, BeforeValidator(_nft_json)] = Field(default=None, alias="json")
    file: Annotated[str, Field(min_length=1)] | None = None  # a .nft or .json file, relative to the lab file

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _exactly_one(self, ("ruleset", "json", "file"), "an nftables ruleset")
        return self


class IptablesDump(Base):
    """An `iptables-save` dump, loaded with `iptables-nft-restore` (ip6tables-nft-restore
    for `family: 6`) in its node's namespace."""

    save: Annotated[str, Field(min_length=1)] | None = None  # iptables-save text
    file: Annotated[str, Field(min_length=1)] | None = None  # relative to the lab file
    family: Literal[4, 6] = 4
    noflush: bool = False  # --noflush: add to the tables instead of replacing them

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _exactly_one(self, ("save", "file"), "an iptables dump")
        return self


def _short_rulesets(value: Any) -> Any:
    """`nftables: |` (one ruleset in nft's syntax) and plain-string items are `{ruleset: …}`."""
    if isinstance(value, str):
        return [{"ruleset": value}]
    if isinstance(value, list):
        return [{"ruleset": v} if isinstance(v, str) else v for v in value]
    return value


def _short_dumps(value: Any) -> Any:
    """`iptables: |` (one IPv4 iptables-save dump) and plain-string items are `{save: …}`."""
    if isinstance(value, str):
        return [{"save": value}]
    if isinstance(value, list):
        return [{"save": v} if isinstance(v, str) else v for v in value]
    return value


class Node(Base):
    description: str = ""
    host: Annotated[str, Field(min_length=1)] | None = None  # with --hosts: the machine it runs on (netlab.multihost)
    # Collections default through a factory, not `= []`: pydantic deep-copies a mutable
    # default for every node (a 500-pod lab's validation 10 → 6.5 ms).
    # SerializeAsAny: dumping calls no Python discriminator, whose exceptions (a Ctrl-C)
    # pydantic would swallow into a warning
    links: dict[IfName, SerializeAsAny[Link]] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    neighbors: list[Neighbor] = Field(default_factory=list)
    fdb: list[Fdb] = Field(default_factory=list)
    sysctls: dict[str, SysctlValue] = Field(default_factory=dict)
    exec: list[Annotated[list[str], Field(min_length=1)]] = Field(default_factory=list)
    # responders: tcp/8080, udp/53, http/80 (see netlab.probes.responder_server)
    serve: list[ServeSpec] = Field(default_factory=list)
    # made before the rulesets, which may match them (netlab.lab.ipset)
    ipsets: list[IpSet] = Field(default_factory=list)
    # applied in order, then the iptables dumps
    nftables: Annotated[list[NftRuleset], BeforeValidator(_short_rulesets)] = Field(default_factory=list)
    iptables: Annotated[list[IptablesDump], BeforeValidator(_short_dumps)] = Field(default_factory=list)
    # IPVS virtual services and their real servers (netlab.lab.ipvs)
    ipvs: list[IpvsService] = Field(default_factory=list)


# ---------------------------------------------------------------- cluster (expanded by netlab.expand)


class ClusterNode(Node):
    """A Kubernetes node: a namespace on the underlay with cni0 and, for vxlan, flannel.1.
    Everything a plain node has may be added (links, routes, exec, …); expansion puts the
    generated objects next to them."""

    address: IpAddress | None = None  # on the underlay; default: the next free one from .2
    pod_cidr: Prefix | None = None  # this node's pod subnet; default: the next free one


class ClusterPod(Node):
    """A pod: a namespace whose eth0 is a veth into its node's cni0 (the CNI bridge plugin)."""

    node: NodeName | None = None  # default: spread over the nodes in turn, like a scheduler
    address: IpAddress | None = None  # default: host-local's next free address from .2
    namespace: NamespaceName = DEFAULT_NAMESPACE  # services and policies select pods of their own
    labels: Labels = {}
    replicas: Annotated[int, Field(ge=1, le=10000)] | None = None  # NAME-0 … NAME-(N-1), spread

    @field_validator("host")
    @classmethod
    def _with_its_node(cls, host: str | None) -> str | None:
        if host is not None:
            raise ValueError(
                "a pod runs on its node's host: give `host:` to the node (cluster.nodes.NODE); a pod's node is `node:`"
            )
        return host


class Underlay(Base):
    """The nodes' own network: every node's eth0 on one bridge in a switch namespace."""

    subnet: Prefix = "192.168.49.0/24"  # minikube's
    mtu: Mtu = 1500
    switch: NodeName = "underlay"  # the switch namespace's node name
    netem: Netem | None = None  # on every node's eth0: what each node sends onto the underlay


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value  # `protocol: tcp` is as good as TCP


class ServicePort(Base):
    name: str = ""  # kube-proxy's chain hashes include it ("ns/svc:NAME")
    port: Annotated[int, Field(ge=1, le=65535)]
    target_port: Annotated[int, Field(ge=1, le=65535)] | None = None  # default: port
    protocol: Annotated[Literal["TCP", "UDP", "SCTP"], BeforeValidator(_upper)] = "TCP"
    node_port: Annotated[int, Field(ge=1, le=65535)] | None = None  # NodePort/LoadBalancer: 30000-32767


class Service(Base):
    """A Kubernetes Service: kube-proxy's rules for it are built on every cluster node."""

    namespace: NamespaceName = DEFAULT_NAMESPACE  # its endpoints are pods of this namespace
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    cluster_ip: IpAddress | None = None  # default: the next free one from service_cidr's .10
    ports: Annotated[list[ServicePort], Field(min_length=1)]
    selector: dict[str, str] = {}  # endpoints: the pods whose labels include all of these
    session_affinity: Literal["None", "ClientIP"] = "None"
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    external_ips: list[IpAddress] = []
    load_balancer_ip: IpAddress | None = None


class Cluster(Base):
    backend: Literal["vxlan", "host-gw", "ipip"] = "vxlan"  # ipip: Calico's IPIP mode (tunl0)
    pod_cidr: Prefix = "10.244.0.0/16"  # flannel's Network
    subnet_len: Annotated[int, Field(ge=8, le=126)] | None = None  # flannel's SubnetLen: 24, IPv6 64
    vni: Annotated[int, Field(ge=0, le=16777215)] = 1
    port: Annotated[int, Field(ge=1, le=65535)] = 8472
    underlay: Underlay = Underlay()
    nodes: Annotated[dict[NodeName, ClusterNode], Field(min_length=1)]
    pods: dict[NodeName, ClusterPod] = {}
    proxy_mode: Literal["iptables", "nftables", "ipvs"] = "iptables"  # kube-proxy's mode
    # kube-apiserver's --service-cluster-ip-range; default 10.96.0.0/12, or fd00:10:96::/112 (kind's)
    # when the pods are IPv6
    service_cidr: Prefix | None = None
    node_port_range: tuple[int, int] = (30000, 32767)  # --service-node-port-range
    services: dict[NodeName, Service] = {}
    # Namespaces' labels, for policies' namespace_selector; a namespace a pod, service or
    # policy names exists without being listed here
    namespaces: dict[NamespaceName, Namespace] = {}
    policies: dict[PolicyName, NetworkPolicy] = {}  # compiled to nftables on every node (netlab.expand.policy)


class Lab(Base):
    name: LabName
    description: str = ""
    requires: list[Feature] = []
    tables: dict[str, Annotated[int, Field(ge=1, lt=2**32)]] = {}
    cluster: Cluster | None = None
    nodes: dict[NodeName, Node] = {}  # at least one node, here or in `cluster:`
    checks: list[SerializeAsAny[Check]] = []  # as links:
