"""Preflight of a lab's firewall and sysctls: every node's ipsets, nftables rulesets and
iptables dumps are tried, and its sysctl names looked up, in a throwaway network namespace
before `netlab up` creates anything, so a syntax error, a ruleset the kernel refuses or a
sysctl it does not have is bad input — exit 2, nothing created — with the line of the lab
file it is on, not a rolled-back build. The namespace holds a stand-in for each interface
the node declares and its rules name, so `meta oif veth0` loads exactly when it would on
the node.

nft and iptables-nft-restore say which line of the ruleset or dump is wrong; here that
becomes a line of the lab file: for a literal block (`ruleset: |`) the key's line plus
the offset, for a `file:` the file and its own line, for inline JSON the command's item.

    lab.yaml:17: nodes.router.nftables[0].ruleset: line 4 of the ruleset: Error: syntax error, …
          ip daddr 172.30.0.44 tcp dport 80 dnat to
                                                   ^
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace

from netlab.errors import LabError, Problem
from netlab.kernel import netns as nsops
from netlab.kernel.nft import Message, TrialFailure, trial
from netlab.kernel.sysctl import net_files
from netlab.lab.model import Lab, Node
from netlab.lab.parse import topology
from netlab.lab.source import Path, Source, format_path, printable
from netlab.lab.sysctls import KEYS_FILE, keys_of_tree, normalise, shipped_keys, unknown
from netlab.lab.variants import VariantSource
from netlab.load import LabOrigin
from netlab.naming import netns_name
from netlab.plan.build import firewall_ops
from netlab.plan.ops import CreateIpset, LoadNftables, Op, RestoreIptables


def has_firewall(lab: Lab) -> bool:
    return any(node.ipsets or node.nftables or node.iptables for node in lab.nodes.values())


def check_firewall(lab: Lab, where: LabOrigin | None = None) -> None:
    """Try each node's rulesets and dumps in order, each node in a namespace of its own that
    holds stand-ins for the node's interfaces and vanishes afterwards; raise LabError with
    every node's first failure. Needs root."""
    if os.geteuid() != 0:
        raise PermissionError("trying nftables rulesets needs root")
    where = where or LabOrigin(Source("<lab>"))
    problems: list[Problem] = []
    tried: dict[tuple[object, ...], TrialFailure | None] = {}
    topo = topology(lab)
    for name, node in lab.nodes.items():
        ops = firewall_ops(netns_name(lab.name, name), f"nodes.{name}", node)
        if not ops:
            continue
        interfaces = named_interfaces(tuple(sorted(i.name for i in topo.of_node(name))), ops)
        key = (interfaces, *(_content(op) for op in ops))  # cluster nodes often carry the same rules
        if key not in tried:
            tried[key] = trial(ops, interfaces)
        failure = tried[key]
        if failure is not None:
            problems += _problems(name, node, failure.index, failure.messages, where)
    if problems:
        raise LabError(problems)


# What separates words in a ruleset, a dump or an ipset member: a name is one of its words.
_BREAKS = re.compile(r"[\s\"'{}\[\](),;=:!<>]+")


def named_interfaces(interfaces: tuple[str, ...], ops: Sequence[Op]) -> tuple[str, ...]:
    """The node's interfaces its firewall names: only those need a stand-in (`oif NAME`
    is resolved to an ifindex as the ruleset loads). A cluster node has a veth per pod,
    and making and destroying 200 stand-ins cost more than the dry run of its policy
    table. A name with a separator in it is kept, whatever the rules say."""
    words: set[str] = set()
    for op in ops:
        text = " ".join(op.members) if isinstance(op, CreateIpset) else getattr(op, "text", "")
        if isinstance(op, LoadNftables) and "include" in text:  # its rules may be in another file
            return interfaces
        words.update(_BREAKS.split(text))
    return tuple(name for name in interfaces if name in words or _BREAKS.search(name))


def _content(op: Op) -> tuple[object, ...]:
    if isinstance(op, CreateIpset):
        return (
            "ipset",
            op.name,
            op.type,
            op.family,
            op.range,
            op.hashsize,
            op.maxelem,
            op.comment,
            op.members,
            op.comments,
        )
    if isinstance(op, LoadNftables):
        return ("nft", op.json, op.text)
    if isinstance(op, RestoreIptables):
        return ("iptables", op.family, op.noflush, op.text)
    raise TypeError(type(op).__name__)


def _problems(name: str, node: Node, index: int, messages: list[Message], where: LabOrigin) -> list[Problem]:
    """A failed ruleset's (or dump's) messages as problems at lab-file lines."""
    src = where.source
    if index < len(node.ipsets):  # the sets go first (firewall_ops): the kernel refused one, or a member
        at = where.written(("nodes", name, "ipsets", index))
        return [Problem(src.file, src.line_of(at), format_path(at), _in_variant(src, at) + m.text) for m in messages]
    index -= len(node.ipsets)
    if index < len(node.nftables):
        kind, i, noun = "nftables", index, "the ruleset"
        key = "json" if node.nftables[i].json_ is not None else "ruleset"
    else:
        kind, i, noun, key = "iptables", index - len(node.nftables), "the dump", "save"
    entry = ("nodes", name, kind, i)
    written = where.written(entry)
    file = where.files.get(written)
    out: list[Problem] = []
    for m in messages:
        text = m.text + _hint(node, kind, i, m) + _context(m)
        if file is not None:
            at = (*written, "file")
            spot = f":{m.line}" if m.line else f" (command {m.command})" if m.command is not None else ""
            out.append(Problem(src.file, src.line_of(at), format_path(at), f"{file}{spot}: {text}"))
        elif key == "json":
            at = (*written, "json", "nftables", m.command) if m.command is not None else (*written, "json")
            out.append(Problem(src.file, src.line_of(at), format_path(at), text))
        else:
            at, first = where.text_start(entry, key)
            # nft names the line after a text's last newline for "unexpected end of file"
            last = max(1, len(_text(node, kind, i).splitlines()))
            line = first + min(m.line, last) - 1 if first and m.line else src.line_of(at)
            spot = f"line {m.line} of {noun}: " if m.line else ""
            out.append(Problem(src.file, line, format_path(at), spot + text))
    named = _in_variant(src, written)
    return [replace(p, message=named + p.message) for p in out] if named else out


def _in_variant(src: Source, written: Path) -> str:
    """ "in variant V: " for a variant's problem in a part of the base it kept (one in what
    the variant wrote is under `variants.V` already), as the loader says it."""
    if isinstance(src, VariantSource) and written[:2] != ("variants", src.variant):
        return f"in variant {src.variant}: "
    return ""


def _text(node: Node, kind: str, i: int) -> str:
    entry = node.nftables[i].ruleset if kind == "nftables" else node.iptables[i].save
    return entry or ""


def _hint(node: Node, kind: str, i: int, m: Message) -> str:
    """What the usual mistakes mean."""
    if (
        kind == "iptables"
        and node.iptables[i].family == 4
        and "host/network" in m.text
        and any(":" in line for line in m.context)
    ):
        return " (an IPv6 address in an IPv4 dump? give the dump `family: 6`)"
    return ""


def _context(m: Message) -> str:
    """nft's echo of the offending line and its caret line, indented under the problem.
    Tabs become spaces in both alike, so the caret stays under its place."""
    return "".join("\n      " + printable(line.replace("\t", "    ")) for line in m.context)


def not_checked_note(lab: Lab) -> str:
    """What `netlab validate` says when it cannot try the rulesets."""
    n = sum(len(node.nftables) + len(node.iptables) for node in lab.nodes.values())
    sets = sum(len(node.ipsets) for node in lab.nodes.values())
    what = f"{n} nftables/iptables ruleset{'s' if n != 1 else ''}" if n or not sets else ""
    what += (" and " if what and sets else "") + (f"{sets} ipset{'s' if sets != 1 else ''}" if sets else "")
    return f"{what} not tried: that needs root (sudo netlab validate)"


# ---------------------------------------------------------------- sysctl names


def netns_sysctl_keys() -> set[str]:
    """The (normalised) sysctl names of a fresh network namespace: /proc/sys/net as a thread
    that unshared into one sees it; the namespace vanishes with the thread. Needs root."""

    def run() -> list[str]:
        nsops.unshare_here()
        return net_files()

    return keys_of_tree(nsops.in_thread(run))


def check_sysctls(
    lab: Lab, where: LabOrigin | None = None, verified: frozenset[str] = frozenset(), fresh: list[str] | None = None
) -> None:
    """Raise LabError naming every sysctl of the lab this kernel has no such entry for, as
    a fresh namespace shows. Needs root. The (normalised) names in `verified` are known to
    exist (the running lab a reconcile changes has them): if the lab has no others, no
    namespace is made to look. `fresh`: the files a fresh namespace has, read already
    (by the probing child, in its own: features.AheadProbe.fresh_sysctl_files)."""
    if os.geteuid() != 0:
        raise PermissionError("reading a fresh namespace's sysctls needs root")
    if all(normalise(key) in verified for node in lab.nodes.values() for key in node.sysctls):
        return
    known = keys_of_tree(fresh) if fresh is not None else netns_sysctl_keys()
    problems = list(_unknown_sysctls(lab, where, known))
    if problems:
        raise LabError(problems)


def sysctl_warnings(lab: Lab, where: LabOrigin | None = None) -> list[Problem]:
    """Without root: the lab's sysctls missing from the shipped list of known names. The
    kernel that runs the lab may have more, so these are warnings; `up` checks for real."""
    return list(
        _unknown_sysctls(
            lab,
            where,
            shipped_keys(),
            "netlab's list of a 6.18 kernel's sysctls has no {}{} (as root, validate asks this kernel)",
        )
    )


def _unknown_sysctls(
    lab: Lab, where: LabOrigin | None, known: frozenset[str] | set[str], text: str = "the kernel has no sysctl {}{}"
) -> Iterator[Problem]:
    where = where or LabOrigin(Source("<lab>"))
    for name, node in lab.nodes.items():
        for key in node.sysctls:
            hint = unknown(key, known)
            if hint is not None:
                yield where.problem(("nodes", name, "sysctls", key), text.format(key, hint))


def _write_sysctl_keys() -> None:
    """Regenerate lab/sysctl_keys.txt from this kernel (as root)."""
    keys = sorted(netns_sysctl_keys())
    head = f"# sysctl names of a fresh network namespace, kernel {os.uname().release}; see lab/sysctls.py\n"
    KEYS_FILE.write_text(head + "".join(f"{k}\n" for k in keys), encoding="utf-8")
    print(f"{KEYS_FILE}: {len(keys)} names")


if __name__ == "__main__":
    if sys.argv[1:] != ["--sysctl-keys"]:
        sys.exit("usage: python -m netlab.preflight --sysctl-keys   (as root: rewrites netlab/lab/sysctl_keys.txt)")
    _write_sysctl_keys()
