"""The plan a lab was built with + the plan of its file now → the steps that change one into
the other, in dependency order. Pure: no kernel, no files.

How ops are matched. An op names a kernel object by some of its fields (`identity`: a
route by namespace, table, destination and metric; a link by namespace and name); two ops
of one identity that differ are a change. Objects whose order the kernel keeps are
compared as sequences (`unit`): the addresses of a device (the first of a subnet is the
primary), the rules of a family (a rule without a priority takes one below the last),
the FDB entries of one MAC, the real servers of an IPVS service: from the first
difference on, the old ones are taken away and the new ones made, so the result is what
a fresh build makes. A namespace's firewall (ipsets, nftables rulesets, iptables dumps)
changes as a whole: flushed and loaded again. `exec` commands can only be appended to.

What the kernel takes away by itself: deleting a namespace deletes everything in it and
the far ends of its veths; deleting a link deletes what lives on it (addresses, routes
through it, neighbours, FDB entries, a vxlan over it); a port whose bridge goes loses its
hairpin flag and its bridge FDB entries; removing an IPv4 address (or setting a link
down) may drop the IPv4 routes through it. Such ops are made again if the new plan
still has them ("again: …"). Any op that lives on a device (a `dev` field) is handled
so, whatever its kind.

What cannot change in place (a link's kind or kind settings such as a VXLAN's VNI, an MTU
or master going back to unset, an op with no way to remove it) rebuilds the link it lives
on, or its node; the plan names it (`rebuilt`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from netlab import ipcache
from netlab.lab.sysctls import interface_of
from netlab.plan.ops import (
    STAGES,
    AddAddress,
    AddFdb,
    AddIpvsReal,
    AddIpvsService,
    AddNeighbor,
    AddRoute,
    AddRule,
    CreateIpset,
    CreateLink,
    CreateNetns,
    DeleteNetns,
    LoadNftables,
    MarkNetns,
    Op,
    RestoreIptables,
    RunCommand,
    SetBridgePort,
    SetLink,
    SetSysctl,
    VethType,
    lower_dev,
    stage_of,
)
from netlab.plan.removal import FlushFirewall, Remove, removable

Resource = tuple[str, ...]  # ("ns", NS) · ("link", NS, NAME) · ("ipvs", NS, SERVICE)
SysctlDefault = Callable[[str, str], str]  # (namespace, key) → a fresh namespace's value


@dataclass(frozen=True)
class Step:
    """One op for the driver. `gone`: ops of the lab as it was that are no longer true once
    it is done (what it removes and what goes with it); `made`: ops now true. What runs
    after a failure follows from them (run.py)."""

    sign: str  # "+" made, "-" taken away, "~" changed in place
    op: Op
    why: str = ""
    gone: tuple[Op, ...] = ()
    made: tuple[Op, ...] = ()
    away: bool = False  # runs in the first phase, where objects are taken away (in reverse stage order)
    # the stage it runs in when not its op's: a link's changed settings go with its kind's
    # stage (before the tunnels over it are made, say), as a fresh build sets them at creation
    stage: str = ""

    def render(self) -> str:
        first, *rest = self.op.render().splitlines() or [""]
        note = f"  # {self.why}" if self.why else ""
        return "\n".join([f"{self.sign} {first}{note}", *("  " + line for line in rest)])


@dataclass(frozen=True)
class Reconcile:
    lab: str
    steps: tuple[Step, ...]
    rebuilt: tuple[str, ...] = ()  # "nodes.pod3 (its exec commands changed)"

    @property
    def empty(self) -> bool:
        return not self.steps

    def counts(self) -> dict[str, int]:
        return {sign: sum(1 for s in self.steps if s.sign == sign) for sign in "+~-"}

    def stages(self) -> list[tuple[str, list[Step]]]:
        """Consecutive steps of one stage: a driver runs each group as one stage."""
        groups: list[tuple[str, list[Step]]] = []
        for step in self.steps:
            label = f"take away: {_stage_of(step)}" if step.away else _stage_of(step)
            if groups and groups[-1][0] == label:
                groups[-1][1].append(step)
            else:
                groups.append((label, [step]))
        return groups

    def render(self) -> str:
        c = self.counts()
        lines = [f"# reconcile lab {self.lab}: {c['+']} to make, {c['~']} to change, {c['-']} to take away"]
        lines += [f"# rebuilt: {r}" for r in self.rebuilt]
        for label, steps in self.stages():
            lines.append(f"# {label}")
            lines += [s.render() for s in steps]
        return "\n".join(lines) + "\n"


def reconcile(lab: str, old: Sequence[Op], new: Sequence[Op], sysctl_default: SysctlDefault) -> Reconcile:
    """The steps that turn a lab built with `old` into one built with `new`."""
    return _Diff(lab, list(old), list(new), sysctl_default).result()


# ------------------------------------------------------------------ how ops are named


def _service(op: AddIpvsService | AddIpvsReal) -> tuple[Any, ...]:
    return (op.proto if op.fwmark is None else "", op.family, op.address, op.port, op.fwmark)


def identity(op: Op) -> tuple[Any, ...]:
    """What names the kernel object an op makes or sets; the op itself when nothing less does."""
    if isinstance(op, (CreateNetns, MarkNetns)):
        return (type(op).__name__, op.ns)
    if isinstance(op, SetSysctl):
        return ("sysctl", op.ns, op.key, op.early)
    if isinstance(op, (CreateLink, SetLink, SetBridgePort)):
        return (type(op).__name__, op.ns, op.name)
    if isinstance(op, AddNeighbor):
        return ("neigh", op.ns, op.dev, op.to)
    if isinstance(op, AddRoute):
        return ("route", op.ns, op.family, op.table, op.to, op.metric)
    if isinstance(op, AddIpvsService):
        return ("ipvs", op.ns, *_service(op))
    return ("op", op)


def unit(op: Op) -> tuple[tuple[Any, ...], str] | None:
    """(the sequence an op belongs to, how it changes: ordered | whole | append), or None."""
    if isinstance(op, AddAddress):
        return ("addresses", op.ns, op.dev, ":" in op.address), "ordered"
    if isinstance(op, AddRule):
        return ("rules", op.ns, op.family), "ordered"
    if isinstance(op, AddFdb):
        return ("fdb", op.ns, op.dev, op.lladdr), "ordered"
    if isinstance(op, AddIpvsReal):
        return ("reals", op.ns, *_service(op)), "ordered"
    if isinstance(op, (CreateIpset, LoadNftables, RestoreIptables)):
        return ("firewall", op.ns), "whole"
    if isinstance(op, RunCommand):
        return ("exec", op.ns), "append"
    return None


def makes(op: Op) -> list[Resource]:
    if isinstance(op, CreateNetns):
        return [("ns", op.ns)]
    if isinstance(op, CreateLink):
        far = [("link", op.type.peer_ns, op.type.peer_name)] if isinstance(op.type, VethType) else []
        return [("link", op.ns, op.name), *far]
    if isinstance(op, AddIpvsService):
        return [("ipvs", op.ns, *_service(op))]
    return []


def needs(op: Op, via_devs: Callable[[str, str], list[str]]) -> list[Resource]:
    """What must exist for the object of `op` to exist; its deletion takes the object along."""
    if isinstance(op, CreateNetns):
        return []
    out: list[Resource] = [("ns", op.ns)]
    if isinstance(op, CreateLink):
        if isinstance(op.type, VethType):
            out.append(("ns", op.type.peer_ns))
        if (dev := lower_dev(op.type)) is not None:
            out.append(("link", op.ns, dev))
        return out
    if isinstance(op, (SetLink, SetBridgePort)):
        out.append(("link", op.ns, op.name))
    elif isinstance(op, SetSysctl) and (iface := interface_of(op.key)):
        out.append(("link", op.ns, iface))
    elif isinstance(op, AddIpvsReal):
        out.append(("ipvs", op.ns, *_service(op)))
    dev = getattr(op, "dev", None)  # any op living on a device: address, route, neighbour, FDB, qdisc…
    if isinstance(dev, str):
        out.append(("link", op.ns, dev))
    if isinstance(op, AddRoute) and op.dev is None and op.via:
        out += [("link", op.ns, d) for d in via_devs(op.ns, op.via)]
    return out


def _master(op: Op) -> str | None:
    return op.master if isinstance(op, (CreateLink, SetLink)) else None


def _stage(op: Op) -> str:
    if isinstance(op, DeleteNetns):
        return "namespaces"
    return stage_of(op.op if isinstance(op, Remove) else op)


def _stage_of(step: Step) -> str:
    return step.stage or _stage(step.op)


def _takes_away(op: Op) -> bool:
    return isinstance(op, (Remove, DeleteNetns, FlushFirewall))


def changes(old: Any, new: Any) -> str:
    """`mtu 1500 → 1400, up True → False`: the fields that differ."""
    words = []
    for f in dataclasses.fields(old):
        if f.compare and getattr(old, f.name) != getattr(new, f.name, None):
            a, b = getattr(old, f.name), getattr(new, f.name, None)
            if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
                words.append(changes(a, b))
            else:
                words.append(f"{f.name} {_short(a)} → {_short(b)}")
    return ", ".join(words)


def _short(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "…"


def _where(op: Op) -> str:
    return op.what or op.ns


# ------------------------------------------------------------------ the diff


class _Diff:
    def __init__(self, lab: str, old: list[Op], new: list[Op], sysctl_default: SysctlDefault) -> None:
        self.lab, self.old, self.new, self.sysctl_default = lab, old, new, sysctl_default
        self.counterpart: dict[int, Op] = {}  # id(old op) → the new op it corresponds to
        self.changed: list[tuple[Op, Op]] = []
        self.removed: list[Op] = []
        self.added: list[Op] = []
        self.rebuild_ns: dict[str, str] = {}
        self.rebuild_link: dict[tuple[str, str], str] = {}
        self.steps: list[tuple[tuple[Any, ...], Step]] = []
        self.gone: dict[int, str] = {}  # id(old op) → why it goes by itself
        self._index()

    # -------------------------------------------------------------- indexes

    def _index(self) -> None:
        self.old_pos = {id(op): i for i, op in enumerate(self.old)}
        self.new_pos = {id(op): i for i, op in enumerate(self.new)}
        self.maker: dict[Resource, Op] = {}
        for op in self.old:
            for r in makes(op):
                self.maker[r] = op
        self.subnets: dict[str, list[tuple[Any, str]]] = defaultdict(list)  # ns → (network, dev)
        for op in self.old:
            if isinstance(op, AddAddress):
                self.subnets[op.ns].append((ipcache.ip_interface(op.address).network, op.dev))
        self.dependents: dict[Resource, list[Op]] = defaultdict(list)
        for op in self.old:
            for r in needs(op, self._via_devs):
                self.dependents[r].append(op)
        self.far_up = {(op.ns, op.name): op.up for op in self.new if isinstance(op, SetLink)}
        self.ports: dict[tuple[str, str], list[CreateLink | SetLink]] = defaultdict(list)
        for op in self.old:
            if isinstance(op, (CreateLink, SetLink)) and op.master:
                self.ports[(op.ns, op.master)].append(op)

    def _via_devs(self, ns: str, via: str) -> list[str]:
        ip = ipcache.ip_address(via)
        return [dev for net, dev in self.subnets.get(ns, []) if ip.version == net.version and ip in net]

    # -------------------------------------------------------------- matching

    def _match(self) -> None:
        singles: dict[tuple[Any, ...], tuple[list[Op], list[Op]]] = defaultdict(lambda: ([], []))
        units: dict[tuple[Any, ...], tuple[str, list[Op], list[Op]]] = {}
        for side, ops in ((0, self.old), (1, self.new)):
            for op in ops:
                u = unit(op)
                if u is None:
                    singles[identity(op)][side].append(op)
                else:
                    entry = units.setdefault(u[0], (u[1], [], []))
                    (entry[1], entry[2])[side].append(op)
        for olds, news in singles.values():
            for o, n in zip(olds, news, strict=False):
                self.counterpart[id(o)] = n
                if o != n:
                    self.changed.append((o, n))
            self.removed += olds[len(news) :]
            self.added += news[len(olds) :]
        for how, olds, news in units.values():
            self._match_unit(how, olds, news)

    def _match_unit(self, how: str, olds: list[Op], news: list[Op]) -> None:
        same = 0
        while same < min(len(olds), len(news)) and olds[same] == news[same]:
            same += 1
        if how == "whole" and (same < len(olds) or same < len(news)):
            same = 0
        if how == "append" and same < len(olds):
            self._rebuild_node(olds[0].ns, "its exec commands changed (they run once; they cannot be undone)")
        for o, n in zip(olds[:same], news[:same], strict=True):
            self.counterpart[id(o)] = n
        self.removed += olds[same:]
        self.added += news[same:]

    # -------------------------------------------------------------- decisions

    def _rebuild_node(self, ns: str, why: str) -> None:
        self.rebuild_ns.setdefault(ns, why)

    def _rebuild_link(self, ns: str, name: str, why: str) -> None:
        if name == "lo":
            self._rebuild_node(ns, f"lo: {why}")
        else:
            self.rebuild_link.setdefault((ns, name), why)

    def _rebuild_host(self, op: Op, why: str) -> None:
        dev = getattr(op, "dev", None)
        if isinstance(dev, str):
            self._rebuild_link(op.ns, dev, why)
        else:
            self._rebuild_node(op.ns, why)

    def _decide_rebuilds(self) -> None:
        """Changes and removals that no op can make in place rebuild what holds them."""
        for o, n in self.changed:
            why = self._unchangeable(o, n)
            if why is not None:
                if isinstance(o, (CreateLink, SetLink)):
                    self._rebuild_link(o.ns, o.name, f"{_where(n)}: {why}")
                elif isinstance(o, SetSysctl):
                    self._rebuild_node(o.ns, why)
                else:
                    self._rebuild_host(o, f"{_where(n)}: {why}")
        for o, n in self.changed:  # after the links' own reasons, which name them better
            self._tunnels_follow_mtu(o, n)
        self._emptied_bridges()
        doomed = {id(op) for op in self.closure(self._vanishing())}
        for o in self.removed:
            if id(o) in doomed:
                continue
            if isinstance(o, SetSysctl) and o.early:
                self._rebuild_node(o.ns, "netlab's IPv6 defaults for it change")
            elif isinstance(o, SetLink):
                self._rebuild_link(o.ns, o.name, f"{_where(o)}: its settings go back to the defaults")
            elif not (
                removable(o)
                or o.undo() is not None
                or isinstance(o, (CreateNetns, MarkNetns, SetSysctl, SetBridgePort))
                or unit(o) is not None
            ):
                self._rebuild_host(o, f"{_where(o)} is gone from the file, and a {type(o).__name__} cannot be undone")

    def _tunnels_follow_mtu(self, o: Op, n: Op) -> None:
        """A VXLAN (an IP tunnel, a vlan) without an MTU of its own took its dev's MTU (less
        its headers) when it was made, and keeps it when the dev's changes: made anew, as in
        a fresh build."""
        if not (isinstance(o, (CreateLink, SetLink)) and isinstance(n, (CreateLink, SetLink)) and o.mtu != n.mtu):
            return
        for v in self.new:
            if (
                isinstance(v, CreateLink)
                and (v.ns, lower_dev(v.type), v.mtu) == (n.ns, n.name, None)
                and ("link", v.ns, v.name) in self.maker
            ):
                why = f"{_where(n)}: its MTU changes, and a {'VXLAN' if v.kind == 'vxlan' else v.kind} over it takes its MTU from it when made"
                self._rebuild_link(v.ns, v.name, why)

    def _emptied_bridges(self) -> None:
        """A bridge that loses its last port is not what a fresh one without ports is: it
        keeps the ports' offload sizes (tso_max_size) and has no carrier (its routes are
        `linkdown`). Made anew, as a fresh build makes it."""
        new_ports = {(op.ns, op.master) for op in self.new if isinstance(op, (CreateLink, SetLink)) and op.master}
        for o in self.old:
            if not (isinstance(o, CreateLink) and o.kind == "bridge"):
                continue
            key = (o.ns, o.name)
            if self.ports.get(key) and key not in new_ports and id(o) in self.counterpart:
                self._rebuild_link(o.ns, o.name, f"{_where(o)}: its last port goes (an emptied bridge has no carrier)")

    def _unchangeable(self, o: Op, n: Op) -> str | None:
        """Why the change from o to n cannot be made in place, or None."""
        if isinstance(o, CreateLink) and isinstance(n, CreateLink):
            if o.type.kind != n.type.kind:
                return f"its kind {o.type.kind} → {n.type.kind} (not changeable in place)"
            if _kind_part(o) != _kind_part(n):
                return f"{changes(o.type, n.type) or 'its kind changes'} (not changeable in place)"
            ot, nt = o.type, n.type
            far_reset = isinstance(ot, VethType) and isinstance(nt, VethType) and bool(ot.peer_mtu and not nt.peer_mtu)
            if (o.mtu and not n.mtu) or far_reset:
                return "its MTU goes back to the default"
            if o.master and not n.master:
                return f"it leaves its master {o.master}"
            return _goes_down(o, n)
        if isinstance(o, SetLink) and isinstance(n, SetLink):
            if o.mtu and not n.mtu:
                return "its MTU goes back to the default"
            if o.master and not n.master:
                return f"it leaves its master {o.master}"
            return _goes_down(o, n)
        if isinstance(o, SetSysctl):
            return "netlab's IPv6 defaults for it change" if o.early else None
        if isinstance(o, (SetBridgePort, AddNeighbor)):
            return None
        if removable(o) or o.undo() is not None:
            return None
        return f"a {type(o).__name__} cannot be changed in place ({changes(o, n)})"

    # -------------------------------------------------------------- what goes by itself

    def _vanishing(self) -> set[Resource]:
        roots: set[Resource] = {("ns", ns) for ns in self.rebuild_ns}
        for ns, name in self.rebuild_link:
            maker = self.maker.get(("link", ns, name))
            if maker is not None:
                roots |= set(makes(maker))
        for o in self.removed:
            if isinstance(o, (CreateNetns, CreateLink, AddIpvsService)):
                roots |= set(makes(o))
        for o, _n in self.changed:
            if isinstance(o, AddIpvsService):
                roots |= set(makes(o))  # a service is changed by deleting it: its reals go with it
        return roots

    def closure(self, roots: set[Resource], skip: Op | None = None) -> list[Op]:
        """Old ops whose objects go when `roots` go (transitively)."""
        out: list[Op] = []
        seen: set[int] = set()
        todo = list(roots)
        done: set[Resource] = set()
        while todo:
            r = todo.pop()
            if r in done:
                continue
            done.add(r)
            for op in self.dependents.get(r, []):
                if id(op) in seen or op is skip:
                    continue
                seen.add(id(op))
                out.append(op)
                todo += makes(op)
        return out

    # -------------------------------------------------------------- steps

    def _step(self, step: Step, order_op: Op) -> None:
        if _takes_away(step.op):
            step = replace(step, away=True)
        stage = STAGES.index(_stage_of(step))
        if step.away:
            sub = 0 if isinstance(step.op, FlushFirewall) else 1
            if isinstance(step.op, Remove) and isinstance(step.op.op, AddIpvsReal):
                sub = 0
            key: tuple[Any, ...] = (0, -stage, sub, -self.old_pos.get(id(order_op), 0))
        else:
            key = (1, stage, 0, self.new_pos.get(id(order_op), len(self.new)))
        self.steps.append((key, step))

    def _take_away(self, o: Op, why: str) -> None:
        goes = self.closure(set(makes(o)), skip=o)
        gone, made = [o, *goes], []
        if isinstance(o, CreateLink):  # its ports stay, without their master and bridge settings
            for port in self.ports.get((o.ns, o.name), []):
                if port not in goes:
                    gone += [port, *self._port_lost(port.ns, port.name, f"its master {o.name} is rebuilt")]
                    made.append(replace(port, master=None))
        self._step(Step("-", Remove(o.ns, o.what, op=o), why, gone=tuple(gone), made=tuple(made)), o)

    def result(self) -> Reconcile:
        self._match()
        self._decide_rebuilds()
        for root in sorted(self._vanishing()):
            for op in self.closure({root}):
                self.gone.setdefault(id(op), _because(root))
        self._rebuilt_steps()
        self._removal_steps()
        self._change_steps()
        self._soft_losses()
        self._again_steps()
        self.steps.sort(key=lambda ks: ks[0])
        rebuilt = [f"{ns} ({why})" for ns, why in self.rebuild_ns.items()]
        rebuilt += [f"{ns} link {name} ({why})" for (ns, name), why in self.rebuild_link.items()]
        return Reconcile(self.lab, tuple(s for _, s in self.steps), tuple(rebuilt))

    def _rebuilt_steps(self) -> None:
        for ns in self.rebuild_ns:
            netns = self.maker[("ns", ns)]
            self.gone[id(netns)] = f"rebuilt: {self.rebuild_ns[ns]}"
            goes = (netns, *self.closure({("ns", ns)}))
            self._step(Step("-", DeleteNetns(ns, ns), f"rebuilt: {self.rebuild_ns[ns]}", gone=goes), netns)
        for (ns, name), why in self.rebuild_link.items():
            link = self.maker.get(("link", ns, name))
            if link is not None and id(link) not in self.gone:
                self.gone[id(link)] = f"rebuilt: {why}"
                self._take_away(link, f"rebuilt: {why}")

    def _removal_steps(self) -> None:
        firewalls: dict[str, list[Op]] = defaultdict(list)
        for o in self.removed:
            if id(o) in self.gone:
                continue
            if unit(o) is not None and unit(o)[1] == "whole":  # type: ignore[index]
                firewalls[o.ns].append(o)
            elif isinstance(o, CreateNetns):
                goes = (o, *self.closure({("ns", o.ns)}))
                self._step(Step("-", DeleteNetns(o.ns, o.what), _where(o), gone=goes), o)
            elif isinstance(o, MarkNetns):
                continue
            elif isinstance(o, SetSysctl):
                value = self.sysctl_default(o.ns, o.key)
                reset = SetSysctl(o.ns, o.what, key=o.key, value=value)
                self._step(Step("-", reset, f"{_where(o)}: back to the default", gone=(o,)), o)
            elif isinstance(o, SetBridgePort):
                off = SetBridgePort(o.ns, o.what, name=o.name, hairpin=False)
                self._step(Step("-", off, f"{_where(o)}: back to the default", gone=(o,)), o)
            elif removable(o):
                self._take_away(o, _where(o))
                self._flushed_routes(o)
            elif (undo := o.undo()) is not None:
                self._step(Step("-", undo, _where(o), gone=(o,), away=True), o)
        for ns, ops in firewalls.items():
            self._firewall_reset(ns, ops)

    def _firewall_reset(self, ns: str, olds: list[Op]) -> None:
        """The namespace's firewall goes whole: flushed, its sets destroyed; the new one is
        made from the top (its ops are all in `added`)."""
        rules = tuple(o for o in olds if not isinstance(o, CreateIpset))
        self._step(Step("-", FlushFirewall(ns, f"{ns} firewall"), "its firewall changes", gone=rules), olds[0])
        for o in olds:
            if isinstance(o, CreateIpset):
                self._step(Step("-", Remove(o.ns, o.what, op=o), _where(o), gone=(o,)), o)

    def _change_steps(self) -> None:
        for o, n in self.changed:
            if id(o) in self.gone:
                continue  # made again below
            if isinstance(o, CreateLink) and isinstance(n, CreateLink):
                self._relink(o, n)
            elif isinstance(o, SetLink) and isinstance(n, SetLink):
                lost = self._link_state_change(o, n, o.name)
                self._step(Step("~", n, f"{_where(n)}: {changes(o, n)}", gone=(o, *lost), made=(n,)), n)
            elif isinstance(o, (SetSysctl, SetBridgePort, AddNeighbor)):
                self._step(Step("~", n, f"{_where(n)}: {changes(o, n)}", gone=(o,), made=(n,)), n)
            elif isinstance(o, AddIpvsService):
                self._take_away(o, f"{_where(n)}: {changes(o, n)}")
                self._step(Step("+", n, _where(n), made=(n,)), n)
            else:
                self._take_away(o, f"{_where(n)}: {changes(o, n)}")
                self._step(Step("+", n, _where(n), made=(n,)), n)
                self._flushed_routes(o)

    def _relink(self, o: CreateLink, n: CreateLink) -> None:
        """A link's settings (state, master, MTU, MAC) changed: `ip link set`, on each end."""
        lost_master = n.master is not None and ("link", n.ns, n.master) in self._vanishing()
        near = SetLink(
            n.ns,
            n.what,
            name=n.name,
            up=n.up,
            master=n.master if (n.master != o.master or lost_master) else None,
            mtu=n.mtu if n.mtu != o.mtu else None,
            mac=n.mac if n.mac != o.mac else None,
        )
        lost = self._link_state_change(o, n, n.name)
        why = f"{_where(n)}: {changes(o, n)}"
        self._step(Step("~", near, why, gone=(o, *lost), made=(n,), stage=stage_of(n)), n)
        ot, nt = o.type, n.type
        if (
            isinstance(ot, VethType)
            and isinstance(nt, VethType)
            and (ot.peer_mtu, ot.peer_mac)
            != (
                nt.peer_mtu,
                nt.peer_mac,
            )
        ):
            far = SetLink(
                nt.peer_ns,
                n.what,
                name=nt.peer_name,
                up=self.far_up.get((nt.peer_ns, nt.peer_name), True),
                mtu=nt.peer_mtu if nt.peer_mtu != ot.peer_mtu else None,
                mac=nt.peer_mac if nt.peer_mac != ot.peer_mac else None,
            )
            self._step(Step("~", far, f"{_where(n)} (far end): {changes(ot, nt)}"), n)

    def _link_state_change(self, o: CreateLink | SetLink, n: CreateLink | SetLink, name: str) -> list[Op]:
        """What a link's change of master or state takes with it: the port's bridge settings
        (returned: they go with the step), IPv4 routes through it (removed first)."""
        if o.up and not n.up:
            self._routes_dropped(o.ns, name, None, f"{name} goes down")
        return self._port_lost(o.ns, name, f"{name} changes master") if o.master != n.master else []

    def _again_steps(self) -> None:
        """New-plan ops whose old counterpart goes by itself, and brand-new ones."""
        again = {
            id(self.counterpart[id(o)]): why
            for o in self.old
            if (why := self.gone.get(id(o))) is not None and id(o) in self.counterpart
        }
        for n in self.new:
            if id(n) in again:
                self._step(Step("+", n, f"again: {again[id(n)]}", made=(n,)), n)
        for n in self.added:
            if id(n) not in again:
                self._step(Step("+", n, _where(n), made=(n,)), n)

    # -------------------------------------------------------------- what the kernel drops on its own

    def _flushed_routes(self, o: Op) -> None:
        """Taking away an IPv4 address may drop the IPv4 routes through its device or subnet."""
        if isinstance(o, AddAddress) and ":" not in o.address:
            self._routes_dropped(o.ns, o.dev, o.address, f"{o.address} goes from {o.dev}")

    def _routes_dropped(self, ns: str, dev: str, address: str | None, cause: str) -> None:
        nets = [net for net, d in self.subnets.get(ns, []) if d == dev and net.version == 4]
        ip = str(ipcache.ip_interface(address).ip) if address else None
        for r in self.old:
            if not isinstance(r, AddRoute) or r.ns != ns or r.family != 4 or id(r) in self.gone:
                continue
            through = r.dev == dev or (r.dev is None and r.via and any(ipcache.ip_address(r.via) in n for n in nets))
            if not (through or (ip and r.src == ip)):
                continue
            n = self.counterpart.get(id(r))
            if n is None or n != r:
                continue  # taken away or changed anyway
            self.gone[id(r)] = cause
            self._step(Step("-", Remove(r.ns, r.what, op=r), f"the kernel may drop it: {cause}", gone=(r,)), r)

    def _port_lost(self, ns: str, port: str, cause: str) -> list[Op]:
        """A port leaving its bridge loses its hairpin flag and its bridge FDB entries (made
        again by _again_steps); returns them."""
        lost: list[Op] = []
        for op in self.old:
            if op.ns != ns or id(op) in self.gone:
                continue
            if (isinstance(op, SetBridgePort) and op.name == port) or (
                isinstance(op, AddFdb) and op.master and op.dev == port
            ):
                self.gone[id(op)] = cause
                lost.append(op)
        return lost

    def _soft_losses(self) -> None:
        """Ports whose bridge is rebuilt lose their master: enslave them again."""
        vanishing = {r for r in self._vanishing()} | {r for o in self.old if id(o) in self.gone for r in makes(o)}
        for o in self.old:
            m = _master(o)
            if m is None or id(o) in self.gone or ("link", o.ns, m) not in vanishing:
                continue
            n = self.counterpart.get(id(o))
            if n is None or _master(n) != m:
                continue  # changed: _relink enslaves it
            assert isinstance(o, (CreateLink, SetLink))
            set_master = SetLink(o.ns, o.what, name=o.name, up=o.up, master=m)
            self._step(Step("~", set_master, f"again: its master {m} is rebuilt", gone=(o,), made=(n,)), n)


def _goes_down(o: CreateLink | SetLink, n: CreateLink | SetLink) -> str | None:
    # A link that was up keeps the qdisc it got (noqueue); one made down has none (noop).
    return "it goes down (made anew, it has no qdisc, as in a fresh build)" if o.up and not n.up else None


def _kind_part(op: CreateLink) -> Any:
    """What of a link only a new link can change: its kind's settings (a veth's far-end MTU
    and MAC aside: `ip link set` changes those)."""
    t = op.type
    return replace(t, peer_mtu=None, peer_mac=None) if isinstance(t, VethType) else t


def _because(root: Resource) -> str:
    if root[0] == "ns":
        return f"namespace {root[1]} is made anew"
    if root[0] == "link":
        return f"{root[1]} link {root[2]} is made anew"
    return f"IPVS service {' '.join(str(x) for x in root[2:] if x not in (None, ''))} is made anew"
