"""A lab's topology as people draw it: a small graph model and its renderers.

build_graph() reads an explicit lab (and, for a `cluster:` lab, the expansion's layout:
which pods live on which cluster node with which labels, the services and their
endpoints) into a Graph: namespaces with their interfaces and addresses, veth pairs as
wires, bridges as switches with their ports, VXLAN devices of one VNI as an overlay over
the underlay, services with their endpoints, and the tables that make a namespace a
router. Pure but for load_graph (the lab file, or a running lab's state: no kernel
reads) and render_svg (Graphviz).

The renderers decide how it looks; the model keeps every fact (JSON is the model):
- to_dot(): Graphviz. A namespace is a box (a pod's box inside its cluster node's, a
  VRF a box inside its namespace's, holding its interfaces); a bridge port's host-side
  veth is folded into the line from the bridge to what is plugged in; a namespace with
  one interface and nothing else to say is one node; many such leaves on one bridge
  become one table (flannel-scale's 20 pods a node);
- to_mermaid(): the same drawing as Mermaid text, which GitHub renders;
- render_svg(): to_dot() through Graphviz's `dot`; inline=True gives the bare <svg>
  element an HTML page (the report) embeds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from netlab.errors import NetlabError
from netlab.expand.cluster import ClusterLayout
from netlab.lab.model import Bridge, Lab, Node, Route, Rule, Vrf, Vxlan
from netlab.lab.parse import topology
from netlab.lab.topology import Interface, Topology
from netlab.naming import is_lab_file
from netlab.vocabulary import host_port

FORMATS = ("svg", "dot", "mermaid", "json")
FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Iface:
    name: str
    kind: str  # veth | bridge | vxlan | dummy | vrf | lo
    addresses: tuple[str, ...] = ()
    master: str | None = None  # the bridge or VRF it is enslaved to
    peer: str | None = None  # a veth's other end, NODE:IF
    detail: str = ""  # what else defines it: a VXLAN's VNI and port, a VRF's table


@dataclass(frozen=True)
class Box:
    """One namespace."""

    name: str
    role: str  # switch | node (a cluster node) | pod | router | host
    interfaces: tuple[Iface, ...]
    description: str = ""
    host: str | None = None  # the cluster node a pod lives on
    tables: tuple[str, ...] = ()  # routes, rules, IPVS services, firewall tables: what it decides
    namespace: str = ""  # a pod's Kubernetes namespace
    labels: dict[str, str] = field(default_factory=dict)  # a pod's labels


@dataclass(frozen=True)
class Wire:
    """A veth pair, NODE:IF at each end."""

    a: str
    b: str


@dataclass(frozen=True)
class Overlay:
    """VXLAN devices that share a VNI and a UDP port: one tunnel mesh over the underlay."""

    vni: int
    port: int
    members: tuple[str, ...]  # NODE:IF of each VXLAN device
    underlay: tuple[str, ...]  # each member's local (outer) address, in the same order


@dataclass(frozen=True)
class Endpoint:
    pod: str
    address: str  # ADDR:PORT


@dataclass(frozen=True)
class ServiceBox:
    name: str  # NAMESPACE/NAME, kube-proxy's words (with :PORTNAME for a named port)
    type: str  # ClusterIP | NodePort | LoadBalancer
    frontends: tuple[str, ...]  # cluster IP:port/proto, node port, external and LB addresses
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Graph:
    lab: str
    description: str
    boxes: tuple[Box, ...]
    wires: tuple[Wire, ...]
    overlays: tuple[Overlay, ...] = ()
    services: tuple[ServiceBox, ...] = ()
    proxy_mode: str = ""  # kube-proxy's mode, for a lab with services

    def box(self, name: str) -> Box:
        return next(b for b in self.boxes if b.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_graph(lab: Lab, layout: ClusterLayout | None = None) -> Graph:
    """The explicit `lab` (cluster already expanded) as a Graph; `layout` says which
    namespaces were a cluster's nodes, pods and switch."""
    topo = topology(lab)
    hosts = {pod: node for node, pods in (layout.pods if layout else {}).items() for pod in pods}
    boxes = tuple(_box(name, node, topo, layout, hosts) for name, node in lab.nodes.items())
    wires = tuple(Wire(f"{p.near[0]}:{p.near[1]}", f"{p.far[0]}:{p.far[1]}") for p in topo.pairs)
    services = tuple(_services(layout)) if layout else ()
    return Graph(
        lab.name,
        lab.description,
        boxes,
        wires,
        tuple(_overlays(lab, topo)),
        services,
        layout.proxy_mode if layout and services else "",
    )


def _box(name: str, node: Node, topo: Topology, layout: ClusterLayout | None, hosts: dict[str, str]) -> Box:
    ifaces = tuple(_iface(i) for i in topo.of_node(name) if i.kind != "lo" or i.settings.addresses)
    if layout is not None and name == layout.switch:
        role = "switch"
    elif layout is not None and name in layout.pods:
        role = "node"
    elif name in hosts:
        role = "pod"
    elif all(i.kind == "bridge" or i.master for i in ifaces) and not any(i.addresses for i in ifaces):
        role = "switch"  # nothing but a bridge and its ports: a plain L2 segment
    elif any(str(node.sysctls.get(k, 0)) == "1" for k in FORWARDING):
        role = "router"
    else:
        role = "host"
    namespace = layout.namespaces.get(name, "") if layout else ""
    labels = layout.labels.get(name, {}) if layout else {}
    return Box(name, role, ifaces, node.description, hosts.get(name), tuple(_tables(node, role)), namespace, labels)


def _iface(i: Interface) -> Iface:
    s = i.settings
    detail = ""
    if isinstance(s, Vxlan):
        detail = f"VNI {s.vni} · UDP {s.port}" + (f" · remote {s.remote}" if s.remote else "")
    elif isinstance(s, Vrf):
        detail = f"table {s.table}"
    elif isinstance(s, Bridge) and s.stp:
        detail = "stp"
    peer = f"{i.peer[0]}:{i.peer[1]}" if i.peer else None
    return Iface(i.name, i.kind, tuple(s.addresses), i.master, peer, detail)


def _tables(node: Node, role: str) -> Iterator[str]:
    """What a namespace decides, one line each: routes (but a pod's or a host's lone
    default route, which says nothing), rules, IPVS services, firewall tables."""
    plain_default = len(node.routes) == 1 and node.routes[0].to == "default" and role in ("pod", "host")
    if not plain_default:
        yield from (route_line(r) for r in node.routes)
    yield from (rule_line(r) for r in node.rules)
    for svc in node.ipvs:
        where = f"fwmark {svc.fwmark}" if svc.fwmark is not None else _at(str(svc.address), svc.port)
        reals = ", ".join(f"{_at(r.address, r.port or svc.port)} {r.forward}" for r in svc.reals)
        if len(svc.reals) > 2:
            reals = f"{len(svc.reals)} real servers ({', '.join(sorted({r.forward for r in svc.reals}))})"
        yield f"ipvs {svc.proto} {where} {svc.scheduler} → {reals or 'no real server'}"
    for rs in node.nftables:
        text = rs.ruleset or ""
        names = re.findall(r"^\s*table\s+(\w+)\s+(\S+)", text, re.M) if text else []
        yield "nft " + (", ".join(f"{f} {t}" for f, t in names) if names else "ruleset")
    for dump in node.iptables:
        tables = re.findall(r"^\*(\w+)", dump.save or "", re.M)
        rules = len(re.findall(r"^-A ", dump.save or "", re.M))
        counted = f"{rules} rule" + ("s" if rules != 1 else "")
        yield f"iptables{'' if dump.family == 4 else '6'} {', '.join(tables) or 'dump'} ({counted})"


def route_line(r: Route) -> str:
    words = [r.to if r.type == "unicast" else f"{r.type} {r.to}"]
    for key, value in (("via", r.via), ("dev", r.dev), ("table", r.table), ("src", r.src), ("metric", r.metric)):
        if value is not None:
            words.append(f"{key} {value}")
    return " ".join(words + (["onlink"] if r.onlink else []))


def rule_line(r: Rule) -> str:
    words = [f"rule {r.priority}:" if r.priority is not None else "rule:"] + (["not"] if r.not_ else [])
    for key, value in (
        ("from", r.from_),
        ("to", r.to),
        ("iif", r.iif),
        ("oif", r.oif),
        ("fwmark", r.fwmark),
        ("ipproto", r.ipproto),
        ("sport", r.sport),
        ("dport", r.dport),
        ("dscp", r.dscp),
        ("uidrange", r.uidrange),
    ):
        if value is not None:
            words.append(f"{key} {value}")
    if r.l3mdev:
        words.append("l3mdev")
    if r.action == "lookup" and r.table is not None:
        words.append(f"lookup {r.table}")
    elif r.action == "goto":
        words.append(f"goto {r.goto}")
    elif r.action != "lookup":
        words.append(r.action)
    return " ".join(words)


def _at(address: str, port: int | None) -> str:
    return host_port(address, port, no_port="bracketed")


def _overlays(lab: Lab, topo: Topology) -> Iterator[Overlay]:
    groups: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for (node, name), i in topo.interfaces.items():
        if isinstance(i.settings, Vxlan):
            groups.setdefault((i.settings.vni, i.settings.port), []).append((f"{node}:{name}", i.settings.local or ""))
    for (vni, port), members in groups.items():
        yield Overlay(vni, port, tuple(m for m, _ in members), tuple(u for _, u in members))


def _services(layout: ClusterLayout) -> Iterator[ServiceBox]:
    for s in layout.services:
        fronts = [f"{_at(s.cluster_ip, s.port)}/{s.protocol}"]
        if s.node_port is not None:
            fronts.append(f"nodes:{s.node_port}/{s.protocol}")
        fronts += [
            f"{_at(a, s.port)}/{s.protocol}"
            for a in (*s.external_ips, *([s.load_balancer_ip] if s.load_balancer_ip else []))
        ]
        kind = "LoadBalancer" if s.load_balancer_ip else "NodePort" if s.node_port is not None else "ClusterIP"
        yield ServiceBox(
            s.name, kind, tuple(fronts), tuple(Endpoint(e.pod, _at(e.address, e.port)) for e in s.endpoints)
        )


# ---------------------------------------------------------------- drawing: what becomes what


MAX_LEAVES = 6  # leaves on one bridge drawn one by one; more become one table
TABLE_COLUMNS = 4
MAX_TABLE_LINES = 8  # a namespace's tables shown line by line; the rest counted
WIDE = 4  # namespaces with pods or a crowd side by side before the drawing turns to left-to-right


@dataclass(frozen=True)
class _Line:
    a: str  # NODE:IF, or NODE:BRIDGE#crowd (see _Drawing.end)
    b: str
    label: str = ""
    port: bool = False  # the label names the bridge port at a's end


@dataclass
class _Drawing:
    """The renderer-neutral decisions: which interfaces are drawn, which namespaces are
    one node (leaves), which leaves share a table, and the lines between them."""

    graph: Graph
    shown: dict[str, list[Iface]] = field(default_factory=dict)  # box → interfaces drawn
    leaves: set[str] = field(default_factory=set)  # boxes drawn as one node
    crowds: dict[str, list[str]] = field(default_factory=dict)  # "NODE:BRIDGE" → leaves in one table
    lines: list[_Line] = field(default_factory=list)
    above: list[tuple[str, str]] = field(default_factory=list)  # NODE:IF drawn above a bridge, NODE:BRIDGE

    def end(self, ref: str) -> str:
        """What a NODE:IF is drawn as: the interface, its leaf namespace, or its crowd."""
        node = ref.partition(":")[0]
        for crowd, members in self.crowds.items():
            if node in members:
                return crowd + "#crowd"
        return node if node in self.leaves else ref


def _drawing(g: Graph) -> _Drawing:
    d = _Drawing(g)
    boxes = {b.name: b for b in g.boxes}
    folded: set[str] = set()  # bridge ports folded into the bridge's lines
    wires = {w.a: w.b for w in g.wires} | {w.b: w.a for w in g.wires}
    for b in g.boxes:
        for i in b.interfaces:
            ref = f"{b.name}:{i.name}"
            if i.kind == "veth" and i.master and not i.addresses and _is_bridge(b, i.master) and ref in wires:
                folded.add(ref)
    for b in g.boxes:
        d.shown[b.name] = [i for i in b.interfaces if f"{b.name}:{i.name}" not in folded]
        if len(d.shown[b.name]) == 1 and not b.tables and b.role in ("pod", "host"):
            d.leaves.add(b.name)
    plugged: dict[str, list[tuple[str, str]]] = {}  # NODE:BRIDGE → (far end, port)
    for ref in sorted(folded, key=_natural):
        node, _, port = ref.partition(":")
        master = next(i.master for i in boxes[node].interfaces if i.name == port)
        plugged.setdefault(f"{node}:{master}", []).append((wires[ref], port))
    for bridge, ends in plugged.items():
        node = bridge.partition(":")[0]
        # what a namespace has besides the bridge (its uplink, a tunnel) above it, its pods below
        d.above += [(f"{node}:{i.name}", bridge) for i in d.shown[node] if i.kind != "bridge"]
        leaves = [far.partition(":")[0] for far, _ in ends if far.partition(":")[0] in d.leaves]
        if len(leaves) > MAX_LEAVES:
            d.crowds[bridge] = leaves
            d.lines.append(_Line(bridge, bridge + "#crowd", f"{len(leaves)} veths"))
        many = len(ends) > WIDE  # port names along many lines are a blur
        for far, port in ends:
            if bridge not in d.crowds or far.partition(":")[0] not in leaves:
                said = port in (far.partition(":")[0], f"veth{far.partition(':')[0]}")  # named after the far end
                d.lines.append(_Line(bridge, far, "" if many or said else port, port=True))
    for w in g.wires:
        if w.a not in folded and w.b not in folded:
            d.lines.append(_Line(w.a, w.b))
    return d


def _is_bridge(box: Box, name: str) -> bool:
    return any(i.name == name and i.kind == "bridge" for i in box.interfaces)


def _natural(text: str) -> list[Any]:
    """web-2 before web-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------- DOT


_ROLE_STYLE = {  # cluster box fill by role
    "node": "#eef4fb",
    "pod": "#ffffff",
    "switch": "#f4f4f4",
    "router": "#fdf6e3",
    "host": "#ffffff",
}
_KIND_STYLE = {  # interface node attributes by kind
    "bridge": 'shape=box style="rounded,filled,bold" fillcolor="#cfe2f3"',
    "vxlan": 'shape=hexagon style=filled fillcolor="#fce5cd"',
    "vrf": 'shape=box style="filled,dashed" fillcolor="#ead1dc"',
    "dummy": 'shape=box style="rounded,dashed"',
    **{
        kind: 'shape=hexagon style=filled fillcolor="#fce5cd"'
        for kind in ("ipip", "gre", "gretap", "ip6tnl", "ip6gre", "geneve")
    },
    "vlan": 'shape=box style="rounded,filled" fillcolor="#d9ead3"',
}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(text: str) -> str:
    """Text inside an HTML-like label."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _iface_label(i: Iface, *, show_master: bool = True) -> str:
    kind = "" if i.kind in ("veth", "lo") else f' <FONT POINT-SIZE="9">{i.kind}</FONT>'
    lines = [f"<B>{_h(i.name)}</B>{kind}", *(_h(a) for a in i.addresses)]
    if i.detail:
        lines.append(f'<FONT POINT-SIZE="9">{_h(i.detail)}</FONT>')
    if i.master and i.kind != "bridge" and show_master:
        lines.append(f'<FONT POINT-SIZE="9">master {_h(i.master)}</FONT>')
    return "<" + "<BR/>".join(lines) + ">"


def _leaf_label(b: Box, i: Iface) -> str:
    lines = [f"<B>{_h(_pod_name(b))}</B>", *(f"{_h(i.name)} {_h(a)}" for a in i.addresses)]
    if not i.addresses:
        lines.append(_h(i.name))
    if b.labels:
        lines.append(f'<FONT POINT-SIZE="9">{_h(", ".join(f"{k}={v}" for k, v in b.labels.items()))}</FONT>')
    return "<" + "<BR/>".join(lines) + ">"


def _pod_name(b: Box) -> str:
    """As kubectl says it: NAMESPACE/NAME outside the default namespace."""
    return f"{b.namespace}/{b.name}" if b.namespace not in ("", "default") else b.name


def _tables_label(tables: tuple[str, ...]) -> str:
    shown = list(tables[:MAX_TABLE_LINES])
    if len(tables) > MAX_TABLE_LINES:
        shown.append(f"… {len(tables) - MAX_TABLE_LINES} more")
    return "<" + "".join(f'{_h(t)}<BR ALIGN="LEFT"/>' for t in shown) + ">"


def _crowd_label(crowd: str, members: list[str], g: Graph) -> str:
    cells = []
    for name in members:
        box = g.box(name)
        addr = next((a.split("/")[0] for i in box.interfaces for a in i.addresses), "")
        cells.append(f'<TD>{_h(name)}<BR/><FONT POINT-SIZE="9">{_h(addr)}</FONT></TD>')
    rows = ["<TR>" + "".join(cells[k : k + TABLE_COLUMNS]) + "</TR>" for k in range(0, len(cells), TABLE_COLUMNS)]
    head = f'<TR><TD COLSPAN="{TABLE_COLUMNS}"><B>{len(members)} pods on {_h(crowd.partition(":")[2])}</B></TD></TR>'
    return '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">' + head + "".join(rows) + "</TABLE>>"


def to_dot(g: Graph) -> str:
    """The graph in Graphviz's DOT language (deterministic: a golden file holds it)."""
    d = _drawing(g)
    hosts = {b.host for b in g.boxes if b.host} | {c.partition(":")[0] for c in d.crowds}
    out = [
        f"graph {_q(g.lab)} {{",
        # a wide cluster turns left-to-right, with its nodes kept in name order (little crossing
        # minimisation: the overlay's lines would shuffle node1 … node10)
        f"  graph [{'rankdir=LR mclimit=0.01' if len(hosts) > WIDE else 'rankdir=TB'} label={_title(g)} labelloc=t "
        'fontname="Helvetica" fontsize=16 compound=true newrank=true nodesep=0.3 ranksep=0.6]',
        '  node [fontname="Helvetica" fontsize=11 shape=box style=rounded]',
        '  edge [fontname="Helvetica" fontsize=9 color="#555555"]',
    ]
    pods: dict[str, list[Box]] = {}
    for b in g.boxes:
        if b.host is not None:
            pods.setdefault(b.host, []).append(b)
    for b in g.boxes:
        if b.host is None:
            out += _dot_box(b, d, pods.get(b.name, []), "  ")
    for upper, bridge in d.above:
        out.append(f"  {_q(upper)} -- {_q(bridge)} [style=invis]")
    for line in d.lines:
        attrs = f" [{'taillabel' if line.port else 'label'}={_q(line.label)}]" if line.label else ""
        out.append(f"  {_q(d.end(line.a))} -- {_q(d.end(line.b))}{attrs}")
    out += _dot_overlays(g)
    out += _dot_services(g, d)
    out.append("}")
    return "\n".join(out) + "\n"


def _title(g: Graph) -> str:
    lines = textwrap.wrap(g.description, 100)
    return f"<<B>{_h(g.lab)}</B>" + "".join(f'<BR/><FONT POINT-SIZE="11">{_h(t)}</FONT>' for t in lines) + ">"


def _dot_box(b: Box, d: _Drawing, pods: list[Box], pad: str) -> list[str]:
    if b.name in d.leaves:
        i = d.shown[b.name][0]
        if any(b.name in m for m in d.crowds.values()):
            return []
        return [f'{pad}{_q(b.name)} [label={_leaf_label(b, i)} style="rounded,filled" fillcolor="#ffffff"]']
    role = {"node": "cluster node", "pod": f"pod on {b.host}"}.get(b.role, b.role)
    out = [
        f"{pad}subgraph {_q('cluster_' + b.name)} {{",
        f'{pad}  label=<<B>{_h(b.name)}</B> <FONT POINT-SIZE="9">{_h(role)}</FONT>> style="rounded,filled" '
        f'fillcolor="{_ROLE_STYLE[b.role]}" color="#888888"',
    ]
    vrfs = {i.name: i for i in d.shown[b.name] if i.kind == "vrf"}
    out += [_dot_iface(b, i, pad + "  ") for i in d.shown[b.name] if i.kind != "vrf" and i.master not in vrfs]
    for vrf in vrfs.values():  # a VRF is a box in the box: its interfaces route in its table
        enslaved = [i for i in d.shown[b.name] if i.master == vrf.name]
        out += [
            f"{pad}  subgraph {_q('cluster_' + b.name + '/' + vrf.name)} {{",
            f'{pad}    label=<<B>{_h(vrf.name)}</B> <FONT POINT-SIZE="9">vrf, {_h(vrf.detail)}</FONT>> '
            'style="rounded,dashed,filled" fillcolor="#f8eef3" color="#a64d79"',
        ]
        out += [
            _dot_iface(b, i, pad + "    ", in_vrf=True)
            for i in enslaved + ([vrf] if vrf.addresses or not enslaved else [])
        ]
        out.append(f"{pad}  }}")
    if b.tables:
        out.append(
            f"{pad}  {_q(b.name + '#tables')} [label={_tables_label(b.tables)} shape=note fontsize=9 "
            'style=filled fillcolor="#fffbe6"]'
        )
    for crowd, members in d.crowds.items():
        if crowd.partition(":")[0] == b.name:
            out.append(f"{pad}  {_q(crowd + '#crowd')} [label={_crowd_label(crowd, members, d.graph)} shape=plain]")
    for pod in pods:
        out += _dot_box(pod, d, [], pad + "  ")
    out.append(f"{pad}}}")
    return out


def _dot_iface(b: Box, i: Iface, pad: str, *, in_vrf: bool = False) -> str:
    attrs = f"label={_iface_label(i, show_master=not in_vrf)} {_KIND_STYLE.get(i.kind, '')}".rstrip()
    return f"{pad}{_q(b.name + ':' + i.name)} [{attrs}]"


def _dot_overlays(g: Graph) -> list[str]:
    out = []
    for k, o in enumerate(g.overlays):
        hub = f"overlay#{k}"
        out.append(
            f"  {_q(hub)} [label=<<B>VXLAN overlay</B><BR/>VNI {o.vni} · UDP {o.port}> shape=ellipse "
            'style="dashed,filled" fillcolor="#fff2e6" color="#e69138"]'
        )
        for member, local in zip(o.members, o.underlay, strict=True):
            label = f" label={_q('over ' + local)}" if local and len(o.members) <= WIDE else ""
            out.append(f'  {_q(member)} -- {_q(hub)} [style=dashed color="#e69138" penwidth=2{label}]')
    return out


def _dot_services(g: Graph, d: _Drawing) -> list[str]:
    out = []
    if g.services:
        out.append(
            f'  subgraph "cluster_services" {{ label=<<B>services</B> <FONT POINT-SIZE="9">kube-proxy '
            f'{_h(g.proxy_mode)} mode, on every node</FONT>> style="rounded,dashed" color="#6aa84f"'
        )
        for s in g.services:
            lines = [f'<B>{_h(s.name)}</B> <FONT POINT-SIZE="9">{s.type}</FONT>', *map(_h, s.frontends)]
            out.append(
                f"    {_q('svc#' + s.name)} [label=<{'<BR/>'.join(lines)}> shape=component "
                'style=filled fillcolor="#d9ead3"]'
            )
        out.append("  }")
    for s in g.services:
        for e in s.endpoints:
            target = d.end(f"{e.pod}:eth0")
            out.append(
                f'  {_q("svc#" + s.name)} -- {_q(target)} [style=dotted color="#6aa84f" '
                f"label={_q(e.address.rpartition(':')[2])}]"
            )
    return out


# ---------------------------------------------------------------- Mermaid


def _mid(text: str) -> str:
    """A Mermaid node id: letters, digits and underscores, never a keyword (`end`)."""
    return "n_" + re.sub(r"[^A-Za-z0-9_]", lambda m: f"_{ord(m.group()):x}_", text)


def _mtext(lines: list[str]) -> str:
    return '"' + "<br/>".join(t.replace('"', "#quot;") for t in lines) + '"'


def to_mermaid(g: Graph) -> str:
    """The same drawing as a Mermaid flowchart (GitHub renders it in Markdown)."""
    d = _drawing(g)
    out = ["flowchart TB"]
    pods: dict[str, list[Box]] = {}
    for b in g.boxes:
        if b.host is not None:
            pods.setdefault(b.host, []).append(b)
    for b in g.boxes:
        if b.host is None:
            out += _mermaid_box(b, d, pods.get(b.name, []), "  ")
    for line in d.lines:
        label = f"|{_mtext([line.label])}| " if line.label else " "
        out.append(f"  {_mid(d.end(line.a))} ---{label}{_mid(d.end(line.b))}")
    for k, o in enumerate(g.overlays):
        hub = _mid(f"overlay#{k}")
        out.append(f"  {hub}(({_mtext([f'VXLAN VNI {o.vni}', f'UDP {o.port}'])}))")
        out += [f"  {_mid(m)} -.- {hub}" for m in o.members]
    for s in g.services:
        out.append(f"  {_mid('svc#' + s.name)}[/{_mtext([s.name, *s.frontends])}/]")
        for e in s.endpoints:
            target = d.end(f"{e.pod}:eth0")
            out.append(f"  {_mid('svc#' + s.name)} -.->|{e.address.rpartition(':')[2]}| {_mid(target)}")
    return "\n".join(out) + "\n"


def _mermaid_iface(b: Box, i: Iface, pad: str) -> str:
    lines = [f"{i.name} ({i.kind})" if i.kind not in ("veth", "lo") else i.name, *i.addresses]
    lines += [i.detail] if i.detail else []
    shape = ("{{", "}}") if i.kind == "vxlan" else ("[[", "]]") if i.kind == "bridge" else ("[", "]")
    return f"{pad}{_mid(b.name + ':' + i.name)}{shape[0]}{_mtext(lines)}{shape[1]}"


def _mermaid_box(b: Box, d: _Drawing, pods: list[Box], pad: str) -> list[str]:
    if b.name in d.leaves:
        if any(b.name in m for m in d.crowds.values()):
            return []
        i = d.shown[b.name][0]
        labels = [", ".join(f"{k}={v}" for k, v in b.labels.items())] if b.labels else []
        return [f"{pad}{_mid(b.name)}[{_mtext([_pod_name(b), *(f'{i.name} {a}' for a in i.addresses), *labels])}]"]
    out = [f"{pad}subgraph {_mid('cluster_' + b.name)}[{_mtext([b.name])}]"]
    vrfs = {i.name: i for i in d.shown[b.name] if i.kind == "vrf"}
    out += [_mermaid_iface(b, i, pad + "  ") for i in d.shown[b.name] if i.kind != "vrf" and i.master not in vrfs]
    for vrf in vrfs.values():  # as in DOT: the VRF a box holding its interfaces
        out.append(f"{pad}  subgraph {_mid('cluster_' + b.name + '/' + vrf.name)}[{_mtext([f'vrf {vrf.name}'])}]")
        enslaved = [i for i in d.shown[b.name] if i.master == vrf.name]
        out += [_mermaid_iface(b, i, pad + "    ") for i in enslaved + ([vrf] if vrf.addresses or not enslaved else [])]
        out.append(f"{pad}  end")
    if b.tables:
        shown = list(b.tables[:MAX_TABLE_LINES]) + (
            [f"… {len(b.tables) - MAX_TABLE_LINES} more"] if len(b.tables) > MAX_TABLE_LINES else []
        )
        out.append(f"{pad}  {_mid(b.name + '#tables')}>{_mtext(shown)}]")
    for crowd, members in d.crowds.items():
        if crowd.partition(":")[0] == b.name:
            text = [f"{len(members)} pods on {crowd.partition(':')[2]}", ", ".join(members)]
            out.append(f"{pad}  {_mid(crowd + '#crowd')}[{_mtext(text)}]")
    for pod in pods:
        out += _mermaid_box(pod, d, [], pad + "  ")
    out.append(f"{pad}end")
    return out


# ---------------------------------------------------------------- SVG


def render_svg(g: Graph, timeout: float = 60.0, *, inline: bool = False) -> str:
    """The DOT drawing laid out by Graphviz: an SVG file's text, or with `inline` just its
    <svg> element, to sit inside an HTML page (the report). NetlabError when `dot` is
    missing or refuses."""
    dot = shutil.which("dot")
    if dot is None:
        raise NetlabError(
            "Graphviz's `dot` is not installed (Debian: apt-get install graphviz); "
            "--format dot or mermaid needs no Graphviz"
        )
    done = subprocess.run([dot, "-Tsvg"], input=to_dot(g), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise NetlabError(f"dot failed: {done.stderr.strip()}")
    return done.stdout[done.stdout.index("<svg") :] if inline else done.stdout


def render(g: Graph, fmt: str) -> str:
    """The graph in one of FORMATS."""
    if fmt == "svg":
        return render_svg(g)
    if fmt == "dot":
        return to_dot(g)
    if fmt == "mermaid":
        return to_mermaid(g)
    if fmt == "json":
        from netlab import json_output

        return json_output.dumps("graph", g.to_json()) + "\n"
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------- the one entry that reads files


def load_graph(target: str, variant: str | None = None) -> Graph:
    """The graph of a lab file, or of a lab that is up (by name: the lab file its state
    records, the variant it was built as). UsageError when it is neither."""
    return build_graph(*load_lab_and_layout(target, variant))


def load_lab_and_layout(target: str, variant: str | None = None) -> tuple[Lab, ClusterLayout | None]:
    """The explicit lab load_graph draws, with its cluster layout (also for the report)."""
    from netlab.errors import UsageError
    from netlab.load import load_lab_located, load_named
    from netlab.state import read_state

    if is_lab_file(target):
        lab, where = load_lab_located(target, variant)
        return lab, where.cluster
    name = f"{target}-{variant}" if variant else target
    state = read_state(name)
    if state is None:
        raise UsageError(
            f"no lab file {target!r} and no lab {name!r} up; give a lab file (LAB.yaml) or the "
            "name of a lab that is up (as root: its state is root's)"
        )
    found = load_named(state.source, name)
    if found is None:
        raise UsageError(f"lab {name} was built from {state.source}, which no longer defines it")
    return found[0], found[1].cluster
