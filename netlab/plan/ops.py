"""Kernel operations: plain, frozen data, one class per kind of change.

Each op renders as the `ip(8)` command that would do the same, and knows its undo.
Everything a lab creates lives inside the lab's namespaces, so the undo of every
in-namespace op is the deletion of its namespace: `undo()` returns None for those,
and DeleteNetns for CreateNetns. (If live reconcile arrives, in-namespace undos get
real inverse ops; the apply engine already runs whatever `undo()` returns, in reverse.)
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


def _q(argv: tuple[str, ...]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


@dataclass(frozen=True)
class Op:
    ns: str  # the namespace the op runs in (always one of the lab's)
    what: str = field(default="", compare=False)  # the lab object, e.g. "nodes.host.links.veth1"

    def render(self) -> str:
        raise NotImplementedError

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


@dataclass(frozen=True)
class CreateLink(Op):
    name: str = ""
    kind: str = ""  # bridge | dummy | veth | vxlan
    up: bool = True
    master: str | None = None
    mtu: int | None = None
    mac: str | None = None
    # veth: the far end, created directly in its namespace (no later move: moves are slow)
    peer_ns: str | None = None
    peer_name: str | None = None
    # the far end's MTU and MAC travel in the same message; the kernel refuses to bring a
    # peer up at creation (ENOTCONN), so its state and master come in a SetLink after
    peer_mtu: int | None = None
    peer_mac: str | None = None
    # bridge
    stp: bool = False
    # vxlan
    vni: int | None = None
    port: int | None = None
    local: str | None = None
    remote: str | None = None
    group: str | None = None
    dev: str | None = None
    learning: bool = True
    ttl: int | None = None

    def render(self) -> str:
        parts = [f"ip -n {self.ns} link add {self.name}"]
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        if self.mac:
            parts.append(f"address {self.mac}")
        if self.master:
            parts.append(f"master {self.master}")
        if self.up:
            parts.append("up")
        parts.append(f"type {self.kind}")
        if self.kind == "veth":
            parts.append(f"peer name {self.peer_name} netns {self.peer_ns}")
            if self.peer_mtu:
                parts.append(f"mtu {self.peer_mtu}")
            if self.peer_mac:
                parts.append(f"address {self.peer_mac}")

        elif self.kind == "bridge":
            parts.append(f"stp_state {int(self.stp)}")
        elif self.kind == "vxlan":
            parts.append(f"id {self.vni} dstport {self.port}")
            for key in ("local", "remote", "group", "dev", "ttl"):
                value = getattr(self, key)
                if value is not None:
                    parts.append(f"{key} {value}")
            if not self.learning:
                parts.append("nolearning")
        return " ".join(parts)


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

    def render(self) -> str:
        fam = " -6" if self.family == 6 else ""
        parts = [f"ip{fam} -n {self.ns} rule add"]
        if self.priority is not None:
            parts.append(f"pref {self.priority}")
        parts.append(f"from {self.src or 'all'}")
        if self.dst:
            parts.append(f"to {self.dst}")
        if self.iif:
            parts.append(f"iif {self.iif}")
        if self.oif:
            parts.append(f"oif {self.oif}")
        if self.fwmark is not None:
            mask = f"/{self.fwmask:#x}" if self.fwmask is not None else ""
            parts.append(f"fwmark {self.fwmark:#x}{mask}")
        if self.action == "lookup":
            parts.append(f"lookup {self.table_name or self.table}")
        else:
            parts.append(self.action)
        return " ".join(parts)


@dataclass(frozen=True)
class RunCommand(Op):
    argv: tuple[str, ...] = ()

    def render(self) -> str:
        return f"ip netns exec {self.ns} {_q(self.argv)}"


# Stages, in the order a plan runs them; ops of one stage never depend on each other,
# so a driver may batch a stage's ops per namespace and run namespaces in parallel.
STAGES: tuple[str, ...] = (
    "namespaces",
    "bridges",  # bridges and dummies: nothing they depend on
    "veths",  # may name a bridge master
    "tunnels",  # vxlan: may name a veth or dummy as underlay dev
    "link settings",  # far ends of veths, lo: masters, MTU, MAC, state
    "sysctls",  # after links, so per-interface keys exist
    "addresses",
    "neighbors",  # neighbour entries, then FDB entries (flanneld's order); before the routes that use them
    "routes",
    "rules",
    "commands",
)


def stage_of(op: Op) -> str:
    if isinstance(op, (CreateNetns, MarkNetns)):
        return "namespaces"
    if isinstance(op, CreateLink):
        return {"veth": "veths", "vxlan": "tunnels"}.get(op.kind, "bridges")
    if isinstance(op, SetLink):
        return "link settings"
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
    if isinstance(op, RunCommand):
        return "commands"
    raise TypeError(f"unknown op {type(op).__name__}")
