"""Kernel operations: plain, frozen data, one class per kind of change.

Each op renders as the `ip(8)` command that would do the same, and knows its undo.
Everything a lab creates lives inside the lab's namespaces, so the undo of every
in-namespace op is the deletion of its namespace: `undo()` returns None for those,
and DeleteNetns for CreateNetns. An op whose object can go while its namespace and link
stay has its real inverse: SetNetem's is DeleteNetem (an impairment taken off a link);
the apply engine runs whatever `undo()` returns, in reverse, and skips the undos of a
namespace it deletes anyway.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from typing import ClassVar

from netlab.vocabulary import FLOWLABEL_MASK, format_duration, format_rate, host_port, proto_name


def _q(argv: tuple[str, ...]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


@dataclass(frozen=True)
class Op:
    ns: str  # the namespace the op runs in (always one of the lab's)
    what: str = field(default="", compare=False)  # the lab object, e.g. "nodes.host.links.veth1"

    def render(self) -> str:
        raise NotImplementedError

    def brief(self) -> str:
        """One line for messages (render() may span several)."""
        return self.render()

    def undo(self) -> Op | None:
        return None  # removed together with its namespace (see module docstring)


@dataclass(frozen=True)
class CreateNetns(Op):
    lab: str = ""
    node: str = ""

    def render(self) -> str:
        return f"ip netns add {self.ns}"

    def undo(self) -> Op:
        return DeleteNetns(self.ns, self.what)


@dataclass(frozen=True)
class DeleteNetns(Op):
    def render(self) -> str:
        return f"ip netns del {self.ns}"


@dataclass(frozen=True)
class MarkNetns(Op):
    """Ownership mark: `lo`'s alias names the lab and node, so `down` can find a lab's
    namespaces without its state file and never deletes a namespace it did not create."""

    mark: str = ""

    def render(self) -> str:
        return f"ip -n {self.ns} link set lo up alias {shlex.quote(self.mark)}"


@dataclass(frozen=True)
class SetSysctl(Op):
    key: str = ""
    value: str = ""
    early: bool = False  # a netlab default set right after the namespace exists (before links)

    def render(self) -> str:
        return f"ip netns exec {self.ns} sysctl -qw {self.key}={shlex.quote(self.value)}"


# The kind-specific part of a new link: what follows `type KIND` in `ip link add`.


@dataclass(frozen=True)
class VethType:
    """The far end, created directly in its namespace (no later move: moves are slow).
    Its MTU and MAC travel in the same message; the kernel refuses to bring a peer up at
    creation (ENOTCONN), so its state and master come in a SetLink after."""

    kind: ClassVar[str] = "veth"
    peer_ns: str
    peer_name: str
    peer_mtu: int | None = None
    peer_mac: str | None = None

    def args(self) -> list[str]:
        parts = [f"peer name {self.peer_name} netns {self.peer_ns}"]
        if self.peer_mtu:
            parts.append(f"mtu {self.peer_mtu}")
        if self.peer_mac:
            parts.append(f"address {self.peer_mac}")
        return parts


@dataclass(frozen=True)
class BridgeType:
    kind: ClassVar[str] = "bridge"
    stp: bool = False
    vlan_filtering: bool = False
    default_pvid: int | None = None

    def args(self) -> list[str]:
        parts = [f"stp_state {int(self.stp)}"]
        if self.vlan_filtering:
            parts.append("vlan_filtering 1")
        if self.default_pvid is not None:
            parts.append(f"vlan_default_pvid {self.default_pvid}")
        return parts


@dataclass(frozen=True)
class DummyType:
    kind: ClassVar[str] = "dummy"

    def args(self) -> list[str]:
        return []


@dataclass(frozen=True)
class VxlanType:
    kind: ClassVar[str] = "vxlan"
    vni: int
    port: int
    local: str | None = None
    remote: str | None = None
    group: str | None = None
    dev: str | None = None  # the underlay device
    learning: bool = True
    ttl: int | None = None
    host_underlay: bool = False  # sent from the host's own namespace: its UDP socket stays there

    def args(self) -> list[str]:
        parts = [f"id {self.vni} dstport {self.port}"]
        for key, value in (
            ("local", self.local),
            ("remote", self.remote),
            ("group", self.group),
            ("dev", self.dev),
            ("ttl", self.ttl),
        ):
            if value is not None:
                parts.append(f"{key} {value}")
        if not self.learning:
            parts.append("nolearning")
        return parts


@dataclass(frozen=True)
class VrfType:
    kind: ClassVar[str] = "vrf"
    table: int  # its routing table (a number: iproute2 knows no lab table names)

    def args(self) -> list[str]:
        return [f"table {self.table}"]


@dataclass(frozen=True)
class TunnelType:
    """An IP tunnel: ipip, gre, gretap (IPv4 endpoints), ip6tnl, ip6gre (IPv6). `external`
    (collect_metadata) takes none of the others."""

    kind: str
    local: str | None = None
    remote: str | None = None
    dev: str | None = None  # the underlay device
    ttl: int | None = None
    key: int | None = None  # gre, gretap, ip6gre: `key` sets the key both ways
    external: bool = False

    def args(self) -> list[str]:
        if self.external:
            return ["external"]
        return [
            f"{word} {value}"
            for word, value in (
                ("local", self.local),
                ("remote", self.remote),
                ("dev", self.dev),
                ("ttl", self.ttl),
                ("key", self.key),
            )
            if value is not None
        ]


@dataclass(frozen=True)
class GeneveType:
    kind: ClassVar[str] = "geneve"
    vni: int | None = None
    remote: str | None = None
    port: int = 6081
    ttl: int | None = None
    external: bool = False

    def args(self) -> list[str]:
        if self.external:
            return ["external", f"dstport {self.port}"]
        parts = [f"id {self.vni}", f"remote {self.remote}"]
        if self.ttl is not None:
            parts.append(f"ttl {self.ttl}")
        return [*parts, f"dstport {self.port}"]


@dataclass(frozen=True)
class VlanType:
    """A VLAN on `dev` (rendered as `link DEV` after the name)."""

    kind: ClassVar[str] = "vlan"
    dev: str
    id: int
    protocol: str = "802.1Q"

    def args(self) -> list[str]:
        return [f"id {self.id}"] + ([f"protocol {self.protocol}"] if self.protocol != "802.1Q" else [])


LinkType = VethType | BridgeType | DummyType | VxlanType | VrfType | TunnelType | GeneveType | VlanType


def lower_dev(t: LinkType) -> str | None:
    """The device a new link sits on (an underlay, a vlan's parent): it must exist first."""
    return t.dev if isinstance(t, (VxlanType, TunnelType, VlanType)) else None


@dataclass(frozen=True)
class CreateLink(Op):
    """`ip link add NAME [mtu M] [address A] [master B] [up] type KIND …`: the settings
    every link has, and its kind's own part (`type`)."""

    name: str = ""
    type: LinkType = field(kw_only=True)
    up: bool = True
    master: str | None = None
    mtu: int | None = None
    mac: str | None = None

    @property
    def kind(self) -> str:
        return self.type.kind

    def render(self) -> str:
        from_host = isinstance(self.type, VxlanType) and self.type.host_underlay
        parts = [f"ip link add {self.name} netns {self.ns}" if from_host else f"ip -n {self.ns} link add {self.name}"]
        if isinstance(self.type, VlanType):
            parts.append(f"link {self.type.dev}")
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        if self.mac:
            parts.append(f"address {self.mac}")
        if self.master:
            parts.append(f"master {self.master}")
        if self.up:
            parts.append("up")
        return " ".join([*parts, f"type {self.kind}", *self.type.args()])


@dataclass(frozen=True)
class SetBridgePort(Op):
    """A bridge port's own settings, once it is a port: hairpin mode (CNI's hairpinMode)."""

    name: str = ""
    hairpin: bool = False

    def render(self) -> str:
        return f"ip -n {self.ns} link set {self.name} type bridge_slave hairpin {'on' if self.hairpin else 'off'}"


@dataclass(frozen=True)
class AddBridgeVlan(Op):
    """`bridge vlan add dev DEV vid N [pvid] [untagged] [self]`: a VLAN of a bridge port
    (or, `self`, of the bridge's own port, which its addresses are on)."""

    dev: str = ""
    vid: int = 0
    pvid: bool = False
    untagged: bool = False
    self_: bool = False  # on the bridge device itself

    def render(self) -> str:
        flags = [w for w, on in (("pvid", self.pvid), ("untagged", self.untagged), ("self", self.self_)) if on]
        return " ".join([f"bridge -n {self.ns} vlan add dev {self.dev} vid {self.vid}", *flags])


@dataclass(frozen=True)
class SetLink(Op):
    """Settings for a link that exists already: a veth's far end, or `lo`."""

    name: str = ""
    up: bool = True
    master: str | None = None
    mtu: int | None = None
    mac: str | None = None

    def render(self) -> str:
        parts = [f"ip -n {self.ns} link set {self.name}"]
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        if self.mac:
            parts.append(f"address {self.mac}")
        if self.master:
            parts.append(f"master {self.master}")
        parts.append("up" if self.up else "down")
        return " ".join(parts)


@dataclass(frozen=True)
class SetNetem(Op):
    """`tc qdisc replace dev DEV root netem …`: the impairments of what DEV sends. Percentages
    are percent (5.0 is 5 %), times microseconds, the rate bits per second; 0 and None are
    netem's defaults (nothing)."""

    dev: str = ""
    delay: int = 0
    jitter: int = 0
    correlation: float = 0.0  # of the delay
    distribution: str | None = None  # of the jitter: None (and "uniform") is netem's own
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    rate: int | None = None
    limit: int | None = None

    def args(self) -> list[str]:
        """What follows `netem` (also what `status` shows)."""
        parts: list[str] = []
        if self.delay:
            parts.append(f"delay {format_duration(self.delay)}")
            if self.jitter:
                parts[-1] += f" {format_duration(self.jitter)}" + (
                    f" {self.correlation:g}%" if self.correlation else ""
                )
            if self.distribution and self.distribution != "uniform":
                parts.append(f"distribution {self.distribution}")
        for word, pct in (("loss", self.loss), ("duplicate", self.duplicate), ("corrupt", self.corrupt)):
            if pct:
                parts.append(f"{word} {pct:g}%")
        if self.reorder:
            parts.append(f"reorder {self.reorder:g}%")
        if self.rate is not None:
            parts.append(f"rate {format_rate(self.rate)}")
        if self.limit is not None:
            parts.append(f"limit {self.limit}")
        return parts

    def render(self) -> str:
        return " ".join([f"tc -n {self.ns} qdisc replace dev {self.dev} root netem", *self.args()])

    def undo(self) -> Op:
        # an impairment can be taken off a link that stays (a reconcile, `netlab impair --clear`)
        return DeleteNetem(self.ns, self.what, dev=self.dev)


@dataclass(frozen=True)
class DeleteNetem(Op):
    """`tc qdisc del dev DEV root`: the device's own default qdisc again (`netlab impair --clear`)."""

    dev: str = ""

    def render(self) -> str:
        return f"tc -n {self.ns} qdisc del dev {self.dev} root"


@dataclass(frozen=True)
class AddAddress(Op):
    dev: str = ""
    address: str = ""  # with prefix length

    def render(self) -> str:
        nodad = " nodad" if ":" in self.address else ""
        return f"ip -n {self.ns} addr add {self.address} dev {self.dev}{nodad}"


@dataclass(frozen=True)
class AddNeighbor(Op):
    """A static ARP (IPv4) or NDP (IPv6) entry, as flanneld writes one per remote node."""

    dev: str = ""
    to: str = ""  # an IP address
    lladdr: str = ""  # a MAC

    def render(self) -> str:
        fam = " -6" if ":" in self.to else ""
        return f"ip{fam} -n {self.ns} neigh replace {self.to} lladdr {self.lladdr} dev {self.dev} nud permanent"


@dataclass(frozen=True)
class AddFdb(Op):
    """A static forwarding-database entry. On a vxlan (`master` False) it is the device's
    own table (`self`): which underlay address `dst` a MAC lives behind. On a bridge port
    (`master` True) it goes into the bridge's table: that MAC is behind this port."""

    dev: str = ""
    lladdr: str = ""
    dst: str | None = None
    master: bool = False

    def render(self) -> str:
        parts = [f"bridge -n {self.ns} fdb append {self.lladdr} dev {self.dev}"]
        if self.dst:
            parts.append(f"dst {self.dst}")
        parts.append("master static" if self.master else "self permanent")
        return " ".join(parts)


@dataclass(frozen=True)
class AddRoute(Op):
    family: int = 4
    to: str = ""  # a prefix or "default"
    type: str = "unicast"
    via: str | None = None
    dev: str | None = None
    table: int | None = None  # resolved number; None = main
    table_name: str | None = None  # for rendering
    onlink: bool = False
    metric: int | None = None
    src: str | None = None

    def render(self) -> str:
        fam = " -6" if self.family == 6 else ""
        parts = [f"ip{fam} -n {self.ns} route add"]
        if self.type != "unicast":
            parts.append(self.type)
        parts.append(self.to)
        if self.via:
            parts.append(f"via {self.via}")
        if self.dev:
            parts.append(f"dev {self.dev}")
        if self.src:
            parts.append(f"src {self.src}")
        if self.metric is not None:
            parts.append(f"metric {self.metric}")
        if self.table is not None:
            parts.append(f"table {self.table_name or self.table}")
        if self.onlink:
            parts.append("onlink")
        return " ".join(parts)


@dataclass(frozen=True)
class AddRule(Op):
    family: int = 4
    priority: int | None = None
    src: str | None = None
    dst: str | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    action: str = "lookup"
    table: int | None = None
    table_name: str | None = None
    invert: bool = False
    ipproto: int | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    tos: int | None = None
    dscp: int | None = None  # FRA_DSCP (Linux 6.13+); netlab sends `tos` where that does the same
    dscp_mask: int | None = None
    flowlabel: int | None = None
    flowlabel_mask: int | None = None
    sport_mask: int | None = None
    dport_mask: int | None = None
    uidrange: tuple[int, int] | None = None
    l3mdev: bool = False
    goto: int | None = None
    suppress_prefixlength: int | None = None

    def render(self) -> str:
        fam = " -6" if self.family == 6 else ""
        return " ".join([f"ip{fam} -n {self.ns} rule add", *self._selector_words(), *self._action_words()])

    def _selector_words(self) -> list[str]:
        parts = [f"pref {self.priority}"] if self.priority is not None else []
        if self.invert:
            parts.append("not")
        parts.append(f"from {self.src or 'all'}")
        parts += [
            f"{word} {value}" for word, value in (("to", self.dst), ("iif", self.iif), ("oif", self.oif)) if value
        ]
        if self.fwmark is not None:
            parts.append(
                f"fwmark {self.fwmark:#x}/{self._mask():#x}"
                if self.fwmask is not None or self.fwmark == 0
                else f"fwmark {self.fwmark:#x}"
            )
        if self.ipproto is not None:
            parts.append(f"ipproto {proto_name(self.ipproto)}")
        for word, span, mask in (
            ("sport", self.sport, self.sport_mask),
            ("dport", self.dport, self.dport_mask),
            ("uidrange", self.uidrange, None),
        ):
            if span is None:
                continue
            if mask is not None:
                parts.append(f"{word} {span[0]:#x}/{mask:#x}")
            elif span[0] == span[1] and word != "uidrange":
                parts.append(f"{word} {span[0]}")
            else:
                parts.append(f"{word} {span[0]}-{span[1]}")
        if self.tos is not None:
            parts.append(f"tos {self.tos:#04x}")
        if self.dscp is not None:
            parts.append(f"dscp {self.dscp}" + (f"/{self.dscp_mask:#x}" if self.dscp_mask is not None else ""))
        if self.flowlabel is not None:
            parts.append(f"flowlabel {self.flowlabel:#x}/{self._flowlabel_mask():#x}")
        if self.l3mdev:
            parts.append("l3mdev")
        return parts

    def _flowlabel_mask(self) -> int:
        return FLOWLABEL_MASK if self.flowlabel_mask is None else self.flowlabel_mask

    def _mask(self) -> int:
        # netlab sends a mark without a mask as mask 0xffffffff (the packet's whole mark); `ip
        # rule` would send `fwmark 0x0` with mask 0, which matches every packet: spell it out.
        return 0xFFFFFFFF if self.fwmask is None else self.fwmask

    def _action_words(self) -> list[str]:
        if self.action == "lookup":
            parts = [f"lookup {self.table_name or self.table}"] if self.table is not None else []
        else:
            parts = [f"goto {self.goto}" if self.action == "goto" else self.action]
        if self.suppress_prefixlength is not None:
            parts.append(f"suppress_prefixlength {self.suppress_prefixlength}")
        return parts


def _heredoc(command: str, text: str) -> str:
    """`command <<'EOF'`, the text, and the delimiter: a shell runs it as written."""
    lines = text.splitlines()
    end, n = "EOF", 0
    while end in lines:
        n += 1
        end = f"EOF{n}"
    return "\n".join([f"{command} <<'{end}'", *lines, end])


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    head = (lines[0] if lines else "")[:60]
    more = f" … {len(text.splitlines())} lines" if len(lines) > 1 else ""
    return f"{head}{more}"


@dataclass(frozen=True)
class LoadNftables(Op):
    """An nftables ruleset, applied in the namespace as one transaction (`nft -f`): in nft's
    own syntax, or libnftables JSON (`json`, the text is then the JSON document)."""

    text: str = ""
    json: bool = False

    def command(self) -> str:
        return f"ip netns exec {self.ns} nft {'-j ' if self.json else ''}-f -"

    def render(self) -> str:
        return _heredoc(self.command(), self.text)

    def brief(self) -> str:
        return f"{self.command()} <<'EOF' ({_first_line(self.text)})"


@dataclass(frozen=True)
class RestoreIptables(Op):
    """An iptables-save dump, loaded by iptables-nft-restore (ip6tables-nft-restore for IPv6)."""

    text: str = ""
    family: int = 4
    noflush: bool = False

    def command(self) -> str:
        tool = "ip6tables-nft-restore" if self.family == 6 else "iptables-nft-restore"
        return f"ip netns exec {self.ns} {tool}{' --noflush' if self.noflush else ''}"

    def render(self) -> str:
        return _heredoc(self.command(), self.text)

    def brief(self) -> str:
        return f"{self.command()} <<'EOF' ({_first_line(self.text)})"


@dataclass(frozen=True)
class CreateIpset(Op):
    """An ipset with its members (`ipset create`, then `ipset add` for each member), written
    as `ipset restore` reads them. Members are as `ipset list` shows them."""

    name: str = ""
    type: str = ""  # hash:ip,port, bitmap:port, …
    family: int = 4  # of a hash set
    range: str | None = None  # a bitmap's FROM-TO
    hashsize: int | None = None
    maxelem: int | None = None
    comment: bool = False  # the comment extension
    members: tuple[str, ...] = ()
    comments: tuple[str | None, ...] = ()  # one per member (with the comment extension)

    def create_line(self) -> str:
        parts = [f"create {self.name} {self.type}"]
        if self.type.startswith("hash:") and self.type != "hash:mac":  # the types that hold addresses
            parts.append(f"family {'inet6' if self.family == 6 else 'inet'}")
        if self.range is not None:
            parts.append(f"range {self.range}")
        if self.hashsize is not None:
            parts.append(f"hashsize {self.hashsize}")
        if self.maxelem is not None:
            parts.append(f"maxelem {self.maxelem}")
        if self.comment:
            parts.append("comment")
        return " ".join(parts)

    def add_lines(self) -> list[str]:
        notes = self.comments or (None,) * len(self.members)
        return [
            f"add {self.name} {m}" + (f' comment "{c}"' if c is not None else "")
            for m, c in zip(self.members, notes, strict=True)
        ]

    def render(self) -> str:
        return _heredoc(f"ip netns exec {self.ns} ipset restore", "\n".join([self.create_line(), *self.add_lines()]))

    def brief(self) -> str:
        count = f"{len(self.members)} member{'s' if len(self.members) != 1 else ''}"
        return f"ip netns exec {self.ns} ipset {self.create_line()} (+{count})"


@dataclass(frozen=True)
class _IpvsServiceKey(Op):
    """What identifies an IPVS virtual service: protocol, address and port, or a firewall
    mark (of one family). Rendered as ipvsadm's service options."""

    proto: str = "tcp"  # tcp | udp | sctp (the kernel ignores it for a fwmark service)
    family: int = 4
    address: str | None = None
    port: int = 0
    fwmark: int | None = None

    def service_args(self) -> str:
        if self.fwmark is not None:
            return f"-f {self.fwmark}" + (" -6" if self.family == 6 else "")
        flag = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[self.proto]
        return f"{flag} {host_port(self.address or '', self.port, no_port='address')}"


@dataclass(frozen=True)
class AddIpvsService(_IpvsServiceKey):
    """An IPVS virtual service (`ipvsadm -A`); persistence is `-p SECONDS` (granularity
    `-M`: an IPv4 netmask, an IPv6 prefix length)."""

    scheduler: str = "wlc"
    persistent: int | None = None  # seconds
    netmask: int | None = None  # prefix length of the persistence granularity

    def render(self) -> str:
        parts = [f"ip netns exec {self.ns} ipvsadm -A {self.service_args()} -s {self.scheduler}"]
        if self.persistent is not None:
            parts.append(f"-p {self.persistent}")
        if self.netmask is not None:
            mask = self.netmask if self.family == 6 else ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}").netmask
            parts.append(f"-M {mask}")
        return " ".join(parts)


IPVS_FORWARD_FLAGS = {"masq": "-m", "dr": "-g", "tun": "-i"}


@dataclass(frozen=True)
class AddIpvsReal(_IpvsServiceKey):
    """A real server of the service the key names (`ipvsadm -a`): its address and port
    (0: each packet's own destination port), weight and forwarding method."""

    real: str = ""
    real_port: int = 0
    weight: int = 1
    forward: str = "masq"  # masq | dr | tun

    def render(self) -> str:
        real = host_port(self.real, self.real_port, no_port="address")
        return (
            f"ip netns exec {self.ns} ipvsadm -a {self.service_args()} -r {real} "
            f"{IPVS_FORWARD_FLAGS[self.forward]} -w {self.weight}"
        )


@dataclass(frozen=True)
class RunCommand(Op):
    argv: tuple[str, ...] = ()

    def render(self) -> str:
        return f"ip netns exec {self.ns} {_q(self.argv)}"


# Stages, in the order a plan runs them; ops of one stage never depend on each other,
# so a driver may batch a stage's ops per namespace and run namespaces in parallel.
STAGES: tuple[str, ...] = (
    "namespaces",
    "vrfs",  # VRF devices first: any link may be enslaved to one, a bridge too
    "bridges",  # bridges and dummies: nothing they depend on but a VRF
    "veths",  # may name a bridge master
    "tunnels",  # vxlan, ip tunnels, geneve, vlan: may name a veth, dummy (or one made before) as dev
    "link settings",  # far ends of veths, lo: masters, MTU, MAC, state
    "port settings",  # bridge ports' own flags (hairpin) and VLANs, once every port has its master
    "qdiscs",  # netem on a link end: once the link exists
    "sysctls",  # after links, so per-interface keys exist
    "addresses",
    "neighbors",  # neighbour entries, then FDB entries (flanneld's order); before the routes that use them
    "routes",
    "rules",
    "firewall",  # ipsets, then nftables rulesets, then iptables dumps (which may match the sets), in file order
    "ipvs",  # IPVS services, each followed by its real servers (a driver keeps a namespace's ops in order)
    "commands",
)


def stage_of(op: Op) -> str:
    if isinstance(op, (CreateNetns, MarkNetns)):
        return "namespaces"
    if isinstance(op, CreateLink):
        return {"veth": "veths", "bridge": "bridges", "dummy": "bridges", "vrf": "vrfs"}.get(op.kind, "tunnels")
    if isinstance(op, (SetBridgePort, AddBridgeVlan)):
        return "port settings"
    if isinstance(op, SetLink):
        return "link settings"
    if isinstance(op, (SetNetem, DeleteNetem)):
        return "qdiscs"
    if isinstance(op, SetSysctl):
        return "namespaces" if op.early else "sysctls"
    if isinstance(op, AddAddress):
        return "addresses"
    if isinstance(op, (AddNeighbor, AddFdb)):
        return "neighbors"
    if isinstance(op, AddRoute):
        return "routes"
    if isinstance(op, AddRule):
        return "rules"
    if isinstance(op, (CreateIpset, LoadNftables, RestoreIptables)):
        return "firewall"
    if isinstance(op, (AddIpvsService, AddIpvsReal)):
        return "ipvs"
    if isinstance(op, RunCommand):
        return "commands"
    raise TypeError(f"unknown op {type(op).__name__}")
