"""The firewall counters of a lab namespace, read for counter expectations.

nftables: `nft -a list ruleset` as text — every rule with a `counter` and every named
counter, with its handle and comment (text rather than JSON: JSON cannot print every
statement, see nft.list_in). iptables dumps are loaded by iptables-nft, which gives every
rule a counter, but keeps a rule's `-m comment` in a match nft cannot print; so for those
tables `iptables-save -c` (ip6tables-save) is read instead, and the rules are known by the
words their dump used.
"""

from __future__ import annotations

import re
import shlex

from netlab.kernel import nft
from netlab.observations import CounterView, ObserveError

_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_BLOCK = re.compile(r"^\t(\S+) (\S+) \{(?: # handle (\d+))?$")  # chain, set, map, counter, … of a table
_RULE = re.compile(r"^\t\t(.*?)\s*# handle (\d+)$")
_RULE_COUNTS = re.compile(r"\bcounter packets (\d+) bytes (\d+)")
_OBJECT_COUNTS = re.compile(r"^\t\tpackets (\d+) bytes (\d+)")
_COMMENT = re.compile(r'\bcomment "((?:[^"\\]|\\.)*)"')
_SAVED_RULE = re.compile(r"^\[(\d+):(\d+)\] (-A (\S+) .*)$")


def read_counters(ns: str, *, iptables: bool = False) -> list[CounterView]:
    """Every counter of ns; iptables: the node loads iptables dumps, read them as iptables-save does."""
    try:
        rc, out, err = nft.command_in(ns, "list ruleset", handles=True)
    except (OSError, nft.FirewallError) as e:
        raise ObserveError(f"in {ns}: nft list ruleset: {e}") from e
    if rc != 0:
        raise ObserveError(f"in {ns}: nft list ruleset: {err.strip()}")
    found = parse_nft(out)
    if not iptables:
        return found
    saved: list[CounterView] = []
    for family in ("ip", "ip6"):
        saved += parse_iptables_save(nft.save_iptables(ns, 6 if family == "ip6" else 4), family)
    # iptables-save lists every table of the family (nft's own as "incompatible", without
    # rules): the tables it gave rules of are iptables-nft's, read its way
    managed = {(c.family, c.table) for c in saved}
    return [c for c in found if (c.family, c.table) not in managed] + saved


def parse_nft(listing: str) -> list[CounterView]:
    """The counters of an `nft -a list ruleset` listing."""
    out: list[CounterView] = []
    family = table = chain = ""
    named: tuple[str, int] | None = None  # inside `counter NAME { # handle N`
    named_comment: str | None = None
    for line in listing.splitlines():
        if m := _TABLE.match(line):
            family, table, chain, named = m[1], m[2], "", None
        elif m := _BLOCK.match(line):
            kind, name = m[1], m[2].strip('"')
            chain = name if kind == "chain" else ""
            named, named_comment = ((name, int(m[3])) if kind == "counter" and m[3] else None), None
        elif named and line.startswith("\t\tcomment ") and (comment := _COMMENT.search(line)):
            named_comment = comment[1]
        elif named and (m := _OBJECT_COUNTS.match(line)):
            name, handle = named
            out.append(
                CounterView(family, table, None, handle, name, named_comment, f"counter {name}", int(m[1]), int(m[2]))
            )
            named = None
        elif chain and (m := _RULE.match(line)) and (counts := _RULE_COUNTS.search(m[1])):
            text = _RULE_COUNTS.sub("counter", m[1])
            out.append(
                CounterView(
                    family,
                    table,
                    chain,
                    int(m[2]),
                    None,
                    nft_comment(m[1]),
                    text,
                    int(counts[1]),
                    int(counts[2]),
                )
            )
    return out


def nft_comment(rule: str) -> str | None:
    """The `comment "…"` of a rule as nft lists it."""
    found = _COMMENT.search(rule)
    return found[1] if found else None


def parse_iptables_save(text: str, family: str) -> list[CounterView]:
    """The rule counters of `iptables-save -c` output (`[PACKETS:BYTES] -A CHAIN …`)."""
    out: list[CounterView] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif m := _SAVED_RULE.match(line):
            rule = m[3]
            out.append(CounterView(family, table, m[4], None, None, _comment(rule), rule, int(m[1]), int(m[2])))
    return out


def _comment(rule: str) -> str | None:
    try:
        words = shlex.split(rule)
    except ValueError:
        return None
    for i, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[i + 1]
    return None
