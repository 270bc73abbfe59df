"""Which sysctl names exist: a misspelt one (`net.ipv4.ip_fowrard`) passes every schema and
fails in the kernel halfway through `up`, so it is caught before.

The truth is the kernel's own tree, /proc/sys/net of a fresh network namespace: as root,
preflight.check_sysctls reads it (in a namespace of its own, never the machine's) and an
unknown name is an error. Without root there is no fresh namespace to read, so names are
compared with sysctl_keys.txt, that same tree read once from a recent kernel (6.18) and
shipped; an unknown name is then only a warning, since the kernel that will run the lab
may have more. Regenerate the list as root with `python -m netlab.preflight --sysctl-keys`.

Names are compared normalised: dots (`net.ipv4.conf.eth0.rp_filter`) or slashes
(`net/ipv4/conf/flannel.1/rp_filter`) alike, and a per-interface key under any interface
(`conf.IF.*`, `neigh.IF.*`) as `*`, since the fresh namespace has only lo.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from pathlib import Path

KEYS_FILE = Path(__file__).with_name("sysctl_keys.txt")

# Trees a kernel module adds when it is loaded: absent from a namespace when the module is
# not, so their keys are not judged by absence (the feature checks name the module, and
# net.ipv4.vs.* is checked against IPVS's own list in lab.ipvs).
MODULE_TREES = ("net.bridge.", "net.netfilter.", "net.ipv4.vs.", "net.mpls.", "net.sctp.", "net.tipc.")

_PER_INTERFACE = {("ipv4", "conf"), ("ipv6", "conf"), ("ipv4", "neigh"), ("ipv6", "neigh"), ("mpls", "conf")}


def normalise(key: str) -> str:
    """A sysctl name as the lists hold it: dotted, any interface as `*`."""
    parts = key.split("/") if "/" in key else key.split(".")
    if len(parts) == 5 and (parts[1], parts[2]) in _PER_INTERFACE:
        parts[3] = "*"
    return ".".join(parts)


def interface_of(key: str) -> str | None:
    """The interface a per-interface key is about (`conf.IF.*`, `neigh.IF.*`; not `all`/`default`)."""
    parts = key.split("/") if "/" in key else key.split(".")
    if len(parts) == 5 and (parts[1], parts[2]) in _PER_INTERFACE and parts[3] not in ("all", "default"):
        return parts[3]
    return None


def keys_of_tree(files: Iterable[str]) -> set[str]:
    """Normalised names of the files under /proc/sys (given relative to it: net/ipv4/…)."""
    return {normalise(f) for f in files}


def _unjudged(name: str, known: frozenset[str] | set[str]) -> bool:
    """Is `name` in a module's tree that `known` lacks altogether (the module not loaded)?"""
    tree = next((t for t in MODULE_TREES if (name + ".").startswith(t)), None)
    return tree is not None and not any(k.startswith(tree) for k in known)


@functools.cache
def shipped_keys() -> frozenset[str]:
    """The known-keys list (empty if it is missing: then nothing is warned about)."""
    try:
        text = KEYS_FILE.read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def unknown(key: str, known: frozenset[str] | set[str]) -> str | None:
    """None if `key` is a sysctl of `known` (or in a module's tree that `known` lacks for
    want of the module); else a hint naming the closest one (or "")."""
    name = normalise(key)
    if not known or name in known or _unjudged(name, known):
        return None
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    if not close:
        return ""
    meant, parts = close[0], key.split("/") if "/" in key else key.split(".")
    if "*" in meant and len(parts) == 5:  # the interface as written
        meant = meant.replace("*", parts[3])
    return f"; did you mean {meant}?"
