"""Run a read inside a lab namespace: fn() in a worker thread that entered it (the
caller's thread never moves; a socket opened there stays bound to that namespace).
Shared by the observers (netlab.kernel.routes, conntrack, ipvs)."""

from __future__ import annotations

import errno as errnos
import os
from collections.abc import Callable
from typing import TypeVar

from netlab.kernel import netns
from netlab.observations import ObserveError

T = TypeVar("T")


def _check_ns(ns: str) -> None:
    if not ns or "/" in ns or ns in (".", ".."):
        raise ValueError(f"bad namespace name {ns!r}")


def in_namespace(ns: str, fn: Callable[[], T]) -> T:
    """fn() run in a worker thread that entered namespace ns; an OSError (the namespace
    is gone, netlink refused) becomes ObserveError. Refuses the process's own namespace:
    observers read lab namespaces only."""
    _check_ns(ns)

    def run() -> T:
        try:
            target = os.stat(netns.netns_path(ns))
            own = os.stat("/proc/self/ns/net")  # the process's (main thread's) namespace
            if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
                raise ObserveError(f"{ns} is this process's own network namespace; observers read lab namespaces only")
            with netns.entered(ns):
                return fn()
        except FileNotFoundError:
            raise ObserveError(f"namespace {ns} does not exist") from None
        except OSError as e:
            words, name = e.strerror or str(e), errnos.errorcode.get(e.errno or 0)
            raise ObserveError(f"in {ns}: {words}" + (f" ({name})" if name and name not in words else "")) from e

    return netns.in_thread(run)
