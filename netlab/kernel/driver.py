"""The one seam between netlab and the kernel.

`NetlinkDriver` (netlink.py) implements it for real; `FakeDriver` (fake.py) records
what it is asked to do, for rootless unit tests of apply and teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from netlab.plan.ops import Op

# How long `up` waits for the links it brought up (kernel/settle.py): the kernel's own
# pace after a large build is 100 links a second, but settling does their work at once.
SETTLE_TIMEOUT = 10.0


class OpFailed(Exception):
    """The kernel refused `op`; `reason` is its message (strerror plus extack)."""

    def __init__(self, op: Op, reason: str) -> None:
        self.op = op
        self.reason = reason
        super().__init__(f"{op.brief()}: {reason}")


@dataclass(frozen=True)
class AddressView:
    address: str  # with prefix length
    family: int


@dataclass(frozen=True)
class LinkView:
    name: str
    index: int
    kind: str  # "veth", "bridge", … or "" for lo / physical
    up: bool
    oper: str  # operational state: up, down, lowerlayerdown, unknown
    mtu: int
    mac: str
    master: str | None
    alias: str | None
    addresses: tuple[AddressView, ...] = ()
    table: int | None = None  # a VRF's routing table
    netem: str | None = None  # its root netem qdisc in tc's words (`delay 100ms loss 5%`), if it has one


@dataclass(frozen=True)
class NamespaceView:
    name: str
    links: tuple[LinkView, ...] = field(default=())


class KernelDriver(Protocol):
    def apply(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
        """Apply the ops of one plan stage (they never depend on each other). Calls
        on_done for each op the kernel accepted; raises OpFailed for the first refused
        op in plan order, after every op of the stage was attempted or abandoned."""
        ...

    def settle(self, ops: Sequence[Op], timeout: float = SETTLE_TIMEOUT) -> None:
        """Return once every link `ops` bring up is up as the kernel sees it (operstate up,
        a bridge port forwarding), doing what the kernel has pending on them; raises
        OpFailed naming the links still not up after `timeout` seconds."""
        ...

    def delete_namespaces(self, names: Iterable[str]) -> list[str]:
        """Delete named namespaces (and so everything in them); returns those that existed."""
        ...

    def namespaces(self, only: Callable[[str], bool] | None = None) -> dict[str, tuple[str, str] | None]:
        """Named namespaces on the machine (those `only` accepts) → netlab mark (lab, node), or None."""
        ...

    def processes(self, names: Iterable[str]) -> dict[str, list[int]]:
        """PIDs of processes running inside the named namespaces."""
        ...

    def observe(self, name: str) -> NamespaceView:
        """Links and addresses of one namespace, read from the kernel."""
        ...

    def close(self) -> None: ...
