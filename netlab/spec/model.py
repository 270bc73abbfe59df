"""The lab model: immutable, validated, one class per kind of lab object.

Field validators check a value on its own (an address parses, a name fits IFNAMSIZ; see
values.py); cross-object rules (peers agree, routes name existing devices) live in
`checks.py`. Every model rejects unknown keys, so a typo is an error, never a silently
ignored key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag

from netlab.spec.expectations import Check, ServeSpec
from netlab.spec.values import (
    IFNAMSIZ,
    Base,
    Feature,
    IfName,
    InterfaceAddress,
    IpAddress,
    LabName,
    MacAddress,
    Mark,
    Mtu,
    NodeName,
    PeerRef,
    Prefix,
    TableRef,
)

__all__ = ["IFNAMSIZ", "Base", "Check", "Feature", "NodeName"]


# ---------------------------------------------------------------- links


class _LinkCommon(Base):
    mtu: Mtu | None = None
    mac: MacAddress | None = None
    up: bool = True
    addresses: list[InterfaceAddress] = []
    master: IfName | None = None  # a bridge in the same node


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


LINK_KINDS = ("veth", "bridge", "dummy", "vxlan")


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
    | Annotated[PeerEnd, Tag("end")],
    Discriminator(_link_tag),
]
LINK_TAGS = frozenset({"veth", "bridge", "dummy", "vxlan", "end"})


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
    priority: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    from_: Prefix | None = Field(default=None, alias="from")
    to: Prefix | None = None
    iif: IfName | None = None
    oif: IfName | None = None
    fwmark: Mark | None = None
    table: TableRef | None = None
    action: Literal["lookup", "blackhole", "unreachable", "prohibit"] = "lookup"
    family: Literal[4, 6] | None = None  # needed when neither from nor to gives it; default 4


SysctlValue = int | str


class Node(Base):
    description: str = ""
    links: dict[IfName, Link] = {}
    routes: list[Route] = []
    rules: list[Rule] = []
    sysctls: dict[str, SysctlValue] = {}
    exec: list[Annotated[list[str], Field(min_length=1)]] = []
    serve: list[ServeSpec] = []  # responders: tcp/8080, udp/53, http/80 (see netlab.probes.responders)


class Lab(Base):
    name: LabName
    description: str = ""
    requires: list[Feature] = []
    tables: dict[str, Annotated[int, Field(ge=1, lt=2**32)]] = {}
    nodes: Annotated[dict[NodeName, Node], Field(min_length=1)]
    checks: list[Check] = []


# Table names every namespace knows without declaring them (iproute2's rt_tables).
BUILTIN_TABLES = {"default": 253, "main": 254, "local": 255}
