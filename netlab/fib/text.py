"""Routes, rules and tables as `ip route get` and `ip rule` print them, for evidence."""

from __future__ import annotations

from netlab.observations import RouteQuery, RuleView
from netlab.vocabulary import table_name


def _query_words(q: RouteQuery) -> str:
    """The query's selectors as `ip route get` would spell them."""
    words = f" mark {q.fwmark:#x}" if q.fwmark is not None else ""
    for key in ("iif", "oif", "vrf", "ipproto", "sport", "dport", "uid"):
        value = getattr(q, key)
        if value is not None:
            words += f" {key} {value}"
    if q.tos is not None:
        words += f" tos {q.tos:#04x}"
    if q.flowlabel is not None:
        words += f" flowlabel {q.flowlabel:#x}"
    return words


def route_text(
    q: RouteQuery, type_: str, table: int | None, dev: str | None, via: str | None, prefsrc: str | None
) -> str:
    """'10.0.2.3 via 10.0.0.1 dev eth0 table main src 10.0.0.2' (the type first unless unicast)."""
    text = q.dst if type_ == "unicast" else f"{type_} {q.dst}"
    if q.src is not None:
        text += f" from {q.src}"
    if via is not None:
        text += f" via {via}"
    if dev is not None:
        text += f" dev {dev}"
    text += f" table {table_name(table)}"
    if prefsrc is not None:
        text += f" src {prefsrc}"
    return text + _query_words(q)


def rule_text(r: RuleView, *, invert: bool = False, extra: str = "", goto: int | None = None) -> str:
    """'100: from 10.0.0.0/8 fwmark 0x1/0xff lookup 100', in `ip rule`'s order."""
    text = f"{r.priority}: {'not ' if invert else ''}from {r.src or 'all'}"
    if r.dst is not None:
        text += f" to {r.dst}"
    if r.fwmark is not None:
        mask = "" if r.fwmask in (None, 0xFFFFFFFF) else f"/{r.fwmask:#x}"
        text += f" fwmark {r.fwmark:#x}{mask}"
    if r.iif is not None:
        text += f" iif {r.iif}"
    if r.oif is not None:
        text += f" oif {r.oif}"
    text += extra
    if r.action == "lookup":
        text += f" lookup {table_name(r.table)}"
    elif r.action == "goto":
        text += f" goto {goto if goto is not None else '?'}"
    else:
        text += f" {r.action}"
    return text
