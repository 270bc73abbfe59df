"""An in-memory kernel behind the KernelDriver interface, for rootless unit tests of
apply, rollback and teardown. It records every op and can be told to refuse one.

It also keeps each namespace's links (name → kind, master, VRF table), enough to hold a
plan to the order the real driver needs: like NetlinkDriver, which resolves every
interface a stage's messages name before it sends them, it refuses a link whose master
did not exist before the stage began — and what the kernel refuses (a VRF enslaved)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from netlab.kernel.driver import SETTLE_TIMEOUT, LinkView, NamespaceView, OpFailed
from netlab.naming import parse_mark
from netlab.plan.ops import CreateLink, CreateNetns, MarkNetns, Op, SetLink, VethType, VrfType
from netlab.plan.removal import Remove


@dataclass
class FakeLink:
    kind: str
    master: str | None = None
    table: int | None = None  # a VRF's
    peer: tuple[str, str] | None = None  # a veth's other end: (namespace, name)


@dataclass
class FakeDriver:
    fail: Callable[[Op], str | BaseException | None] = lambda op: None  # a reason or exception to raise
    applied: list[Op] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    netns: dict[str, str | None] = field(default_factory=dict)  # name → lo alias
    links: dict[str, dict[str, FakeLink]] = field(default_factory=dict)  # namespace → name → link
    closed: bool = False
    # as the kernel does, a deleted namespace's veths keep their far ends in other namespaces
    # for a while (its devices go in cleanup_net, later): they stay here
    lingering_veths: bool = False
    settled: list[list[Op]] = field(default_factory=list)  # what settle() was asked for, each call
    unsettled: str | None = None  # settle() raises OpFailed with this reason (links that never came up)

    def apply(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
        before = {ns: set(links) for ns, links in self.links.items()}  # what a stage's messages can name
        for op in ops:
            verdict = self.fail(op)
            if isinstance(verdict, BaseException):
                raise verdict
            if verdict:
                raise OpFailed(op, verdict)
            if isinstance(op, CreateNetns):
                if op.ns in self.netns:
                    raise OpFailed(op, "File exists (EEXIST)")
                self.netns[op.ns] = None
                self.links[op.ns] = {"lo": FakeLink("")}
            elif isinstance(op, MarkNetns):
                self.netns[op.ns] = op.mark
            elif isinstance(op, (CreateLink, SetLink)):
                self._link(op, before)
            elif isinstance(op, Remove) and isinstance(op.op, CreateLink):
                self._unlink(op.op)
            self.applied.append(op)
            on_done(op)

    def _link(self, op: CreateLink | SetLink, before: dict[str, set[str]]) -> None:
        links = self.links.setdefault(op.ns, {})
        if isinstance(op, CreateLink) and op.name in links:
            raise OpFailed(op, "File exists (EEXIST)")
        if isinstance(op, SetLink) and op.name not in links:
            raise OpFailed(op, f"no interface {op.name} in namespace {op.ns}")
        if op.master is not None:
            if op.master not in before.get(op.ns, set()):
                raise OpFailed(op, f"no interface {op.master} in namespace {op.ns}")
            kind = op.kind if isinstance(op, CreateLink) else links[op.name].kind
            if links[op.master].kind == "vrf" and kind == "vrf":
                raise OpFailed(op, "Invalid argument (EINVAL): Can not enslave an L3 master device to a VRF")
            if links[op.master].kind not in ("bridge", "vrf"):
                raise OpFailed(op, "Operation not supported (EOPNOTSUPP)")
        if isinstance(op, SetLink):
            if op.master is not None:
                links[op.name].master = op.master
            return
        links[op.name] = FakeLink(op.kind, op.master, op.type.table if isinstance(op.type, VrfType) else None)
        if isinstance(op.type, VethType):
            peer = self.links.setdefault(op.type.peer_ns, {})
            if op.type.peer_name in peer:
                raise OpFailed(op, "File exists (EEXIST)")
            peer[op.type.peer_name] = FakeLink("veth", peer=(op.ns, op.name))
            links[op.name].peer = (op.type.peer_ns, op.type.peer_name)

    def _unlink(self, op: CreateLink) -> None:
        """Delete a link (both ends of a veth); its ports lose their master, as in the kernel."""
        links = self.links.get(op.ns, {})
        links.pop(op.name, None)
        if isinstance(op.type, VethType):
            self.links.get(op.type.peer_ns, {}).pop(op.type.peer_name, None)
        for link in links.values():
            if link.master == op.name:
                link.master = None

    def settle(self, ops: Sequence[Op], timeout: float = SETTLE_TIMEOUT) -> None:
        links: list[CreateLink | SetLink] = [op for op in ops if isinstance(op, (CreateLink, SetLink))]
        self.settled.append(list(links))
        if self.unsettled is not None and links:
            raise OpFailed(links[0], self.unsettled)
        missing = [op for op in links if op.name != "lo" and op.name not in self.links.get(op.ns, {})]
        if missing:  # as the kernel answers an RTM_GETLINK of a link that is not there
            raise OpFailed(missing[0], f"{missing[0].name} in {missing[0].ns} (No such device (ENODEV))")

    def delete_namespaces(self, names: Iterable[str]) -> list[str]:
        gone = [n for n in names if n in self.netns]
        for name in gone:
            del self.netns[name]
            self.links.pop(name, None)
        for links in self.links.values():  # a veth goes with its far end's namespace
            for ifname in [n for n, link in links.items() if link.peer and link.peer[0] in gone]:
                if not self.lingering_veths:
                    del links[ifname]
        self.deleted += gone
        return gone

    def namespaces(self, only: Callable[[str], bool] | None = None) -> dict[str, tuple[str, str] | None]:
        return {name: parse_mark(alias) for name, alias in self.netns.items() if only is None or only(name)}

    def processes(self, names: Iterable[str]) -> dict[str, list[int]]:
        return {}

    def observe(self, name: str) -> NamespaceView:
        return NamespaceView(
            name,
            tuple(
                LinkView(n, i, link.kind, True, "up", 1500, "", link.master, None, table=link.table)
                for i, (n, link) in enumerate(self.links.get(name, {}).items(), start=1)
            ),
        )

    def close(self) -> None:
        self.closed = True
