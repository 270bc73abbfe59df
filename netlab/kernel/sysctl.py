"""Sysctls of a lab namespace: written under /proc/sys by a thread that stands in the
namespace (/proc/sys/net is per network namespace, as the reading thread sees it)."""

from __future__ import annotations

from collections.abc import Sequence

from netlab.kernel import netns as nsops
from netlab.lab.sysctls import interface_of
from netlab.plan.ops import Op, SetSysctl


def path(key: str) -> str:
    # sysctl(8) convention: with a '/', '/' separates and '.' is literal (net/ipv4/conf/flannel.1/rp_filter)
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def write(key: str, value: str) -> None:
    """Set one sysctl in the calling thread's namespace; FileNotFoundError says what to write instead."""
    try:
        with open(path(key), "w") as f:
            f.write(value)
    except FileNotFoundError:
        if path(key).startswith("/proc/sys/net/ipv4/vs/"):
            raise FileNotFoundError(
                2,
                f"no sysctl {key} in this namespace: the IPVS sysctls exist only on a kernel with ip_vs "
                "loaded (a lab with `ipvs:` objects or net.ipv4.vs.* sysctls gets it checked before `up`)",
            ) from None
        raise FileNotFoundError(
            2,
            f"no sysctl {key} in this namespace (for interface names with a dot write "
            f"slashes, e.g. net/ipv4/conf/flannel.1/rp_filter)",
        ) from None


def apply_here(ops: Sequence[Op]) -> list[tuple[Op, str]]:
    """Write the SetSysctl ops in the calling thread's namespace; (op, reason) of each refused."""
    failed: list[tuple[Op, str]] = []
    for op in ops:
        if not isinstance(op, SetSysctl):
            raise TypeError(f"not a sysctl op: {type(op).__name__}")
        try:
            write(op.key, op.value)
        except OSError as err:
            failed.append((op, reason(err)))
    return failed


def reason(err: BaseException) -> str:
    """An OSError's words as the kernel gave them (strerror, and the path if any)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror if not err.filename else f"{err.strerror}: {err.filename}"
    return str(err)


def fresh_value(key: str) -> str:
    """The value a fresh network namespace has for `key` (for a per-interface key, what a
    new interface gets: its `default`), read in a throwaway namespace. Needs root."""
    iface = interface_of(key)
    parts = key.split("/") if "/" in key else key.split(".")
    if iface is not None:
        parts[3] = "default"

    def run() -> str:
        nsops.unshare_here()
        with open("/proc/sys/" + "/".join(parts)) as f:
            return f.read().strip()

    return nsops.in_thread(run)
