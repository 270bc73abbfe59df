"""An in-memory kernel behind the KernelDriver interface, for rootless unit tests of
apply, rollback and teardown. It records every op and can be told to refuse one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from netlab.kernel.driver import NamespaceView, OpFailed
from netlab.naming import parse_mark
from netlab.plan.ops import CreateNetns, MarkNetns, Op


@dataclass
class FakeDriver:
    fail: Callable[[Op], str | BaseException | None] = lambda op: None  # a reason or exception to raise
    applied: list[Op] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    netns: dict[str, str | None] = field(default_factory=dict)  # name → lo alias
    closed: bool = False

    def apply(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
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
            elif isinstance(op, MarkNetns):
                self.netns[op.ns] = op.mark
            self.applied.append(op)
            on_done(op)

    def delete_namespaces(self, names: Iterable[str]) -> list[str]:
        gone = [n for n in names if n in self.netns]
        for name in gone:
            del self.netns[name]
        self.deleted += gone
        return gone

    def namespaces(self, only: Callable[[str], bool] | None = None) -> dict[str, tuple[str, str] | None]:
        return {name: parse_mark(alias) for name, alias in self.netns.items() if only is None or only(name)}

    def processes(self, names: Iterable[str]) -> dict[str, list[int]]:
        return {}

    def observe(self, name: str) -> NamespaceView:
        return NamespaceView(name)

    def close(self) -> None:
        self.closed = True
