"""How lab objects are named in the kernel, and how netlab recognises its own.

A node's namespace is `<lab>.<node>`: visible in `ip netns list`, usable with
`ip netns exec`, and unambiguous because neither lab nor node names may contain a dot.
Its `lo` carries the alias `netlab:<lab>:<node>`: the ownership mark that lets `down`
work without a state file and never remove a namespace netlab did not create.
"""

from __future__ import annotations

import os

MARK_PREFIX = "netlab:"
NETNS_DIR = "/run/netns"
STATE_DIR = "/run/netlab"


def state_dir() -> str:
    """Where labs' state files are (and the server's socket): NETLAB_STATE_DIR, else STATE_DIR."""
    return os.environ.get("NETLAB_STATE_DIR", STATE_DIR)


def is_lab_file(target: str) -> bool:
    """A command's LAB|FILE argument names a lab file (not a lab) when it looks like a path."""
    return target.endswith((".yaml", ".yml")) or "/" in target


def variant_lab_name(base: str, variant: str) -> str:
    """The name of the lab variant `variant` of lab `base` builds."""
    return f"{base}-{variant}"


def netns_name(lab: str, node: str) -> str:
    return f"{lab}.{node}"


def split_netns_name(name: str) -> tuple[str, str] | None:
    lab, dot, node = name.partition(".")
    return (lab, node) if dot and lab and node and "." not in node else None


def ownership_mark(lab: str, node: str) -> str:
    return f"{MARK_PREFIX}{lab}:{node}"


def parse_mark(alias: str | None) -> tuple[str, str] | None:
    if not alias or not alias.startswith(MARK_PREFIX):
        return None
    lab, sep, node = alias[len(MARK_PREFIX) :].partition(":")
    return (lab, node) if sep and lab and node else None
