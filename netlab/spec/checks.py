"""Cross-object rules, run on a lab whose every field is already valid on its own.

Each rule returns complaints as (key path, message); `load` turns them into Problems
with file and line. Nothing here touches the kernel.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from netlab.spec.model import BUILTIN_TABLES, Lab, Route, Rule, Vxlan
from netlab.spec.topology import Complaint, Topology

_SYSCTL_RE = re.compile(r"^net\.[A-Za-z0-9_.\-/]+$")


def route_family(route: Route) -> int:
    """IPv4 or IPv6, from the first of to/via/src that says; `family:` for a bare default."""
    for value in (route.to, route.via, route.src):
        if value and value != "default":
            return ipaddress.ip_network(value, strict=False).version
    return route.family or 4


def rule_family(rule: Rule) -> int:
    for value in (rule.from_, rule.to):
        if value and value != "default":
            return ipaddress.ip_network(value, strict=False).version
    return rule.family or 4


def check_lab(lab: Lab, topo: Topology) -> list[Complaint]:
    complaints: list[Complaint] = []
    complaints += _check_tables(lab)
    complaints += _check_addresses(lab, topo)
    for node_name, node in lab.nodes.items():
        names = {i.name for i in topo.of_node(node_name)} | {"lo"}
        base = ("nodes", node_name)
        for i, route in enumerate(node.routes):
            complaints += _check_route(lab, route, (*base, "routes", i), names)
        for i, rule in enumerate(node.rules):
            complaints += _check_rule(lab, rule, (*base, "rules", i))
        for key in node.sysctls:
            if not _SYSCTL_RE.match(key) or ".." in key:
                complaints.append(
                    (
                        (*base, "sysctls", key),
                        f"sysctl {key!r} is not a network sysctl; only net.* keys (e.g. "
                        "net.ipv4.ip_forward) can be set, and only inside the lab's namespace",
                    )
                )
        for ifname, link in node.links.items():
            if isinstance(link, Vxlan):
                complaints += _check_vxlan(link, (*base, "links", ifname))
    return complaints


def _check_tables(lab: Lab) -> Iterator[Complaint]:
    by_id: dict[int, str] = {}
    for name, number in lab.tables.items():
        path = ("tables", name)
        if name.isdigit():
            yield path, f"table name {name!r} is a number; use a name like 'vrf2' (numbers need no declaring)"
        if name in BUILTIN_TABLES or number in BUILTIN_TABLES.values():
            yield path, "main (254), local (255) and default (253) are built in; pick another name and number"
        if number in by_id:
            yield path, f"table number {number} is already used by {by_id[number]!r}"
        by_id[number] = name


def _table_ok(lab: Lab, table: int | str | None) -> bool:
    return table is None or isinstance(table, int) or table in lab.tables or table in BUILTIN_TABLES


def _table_complaint(lab: Lab, table: int | str | None, path: tuple[str | int, ...]) -> Iterator[Complaint]:
    if not _table_ok(lab, table):
        known = ", ".join([*sorted(lab.tables), *BUILTIN_TABLES])
        yield (
            (*path, "table"),
            f"table {table!r} is not declared; add it under top-level `tables:` "
            f"(e.g. `tables: {{{table}: 100}}`) or use one of: {known}",
        )


def _check_route(lab: Lab, route: Route, path: tuple[str | int, ...], names: set[str]) -> Iterator[Complaint]:
    yield from _table_complaint(lab, route.table, path)
    family = route_family(route)
    for key in ("via", "src"):
        value = getattr(route, key)
        if value and ipaddress.ip_address(value).version != family:
            yield (*path, key), f"{key} {value} is IPv{6 if family == 4 else 4}, but the route is IPv{family}"
    if route.family and route.to != "default" and route.family != family:
        yield (*path, "family"), f"family {route.family} contradicts to: {route.to}"
    if route.dev and route.dev not in names:
        known = ", ".join(sorted(names))
        yield (*path, "dev"), f"device {route.dev} is not an interface of this node (it has: {known})"
    if route.type == "unicast":
        if not route.via and not route.dev:
            yield path, "a unicast route needs `via:` or `dev:` (or `type: blackhole|unreachable|prohibit`)"
        if route.onlink and not route.dev:
            yield (*path, "onlink"), "onlink needs `dev:` (the kernel must know where the gateway is)"
        if route.via and ipaddress.ip_address(route.via).is_link_local and not route.dev:
            yield (*path, "via"), f"{route.via} is link-local; add `dev:` to say which link"
    else:
        for key in ("via", "dev", "onlink"):
            if getattr(route, key):
                yield (*path, key), f"a {route.type} route has no `{key}`; remove it"


def _check_rule(lab: Lab, rule: Rule, path: tuple[str | int, ...]) -> Iterator[Complaint]:
    yield from _table_complaint(lab, rule.table, path)
    fams = {ipaddress.ip_network(v, strict=False).version for v in (rule.from_, rule.to) if v and v != "default"}
    if len(fams) > 1:
        yield (*path, "to"), "from and to are of different IP families"
    if rule.action == "lookup" and rule.table is None:
        yield path, "a lookup rule needs `table:` (a number or a name from top-level `tables:`)"
    if rule.action != "lookup" and rule.table is not None:
        yield (*path, "table"), f"a {rule.action} rule looks up no table; remove `table:`"


def _check_vxlan(link: Vxlan, path: tuple[str | int, ...]) -> Iterator[Complaint]:
    fams = {ipaddress.ip_address(v).version for v in (link.local, link.remote, link.group) if v}
    if len(fams) > 1:
        yield (*path, "local"), "local, remote and group must be of one IP family"
    if link.remote and link.group:
        yield (*path, "group"), "give either `remote:` (unicast) or `group:` (multicast), not both"
    if link.group and not ipaddress.ip_address(link.group).is_multicast:
        yield (*path, "group"), f"group {link.group} is not a multicast address"
    if link.group and not link.dev:
        yield (*path, "dev"), "a multicast vxlan needs `dev:` (the underlay interface)"


def _check_addresses(lab: Lab, topo: Topology) -> Iterator[Complaint]:
    """The same address twice in one L2 segment (or twice on one interface) is a mistake."""
    for segment in topo.segments():
        owner: dict[str, str] = {}
        for key in [k for k in topo.interfaces if k in segment]:  # declaration order
            iface = topo.interfaces[key]
            for i, addr in enumerate(iface.settings.addresses):
                ip = str(ipaddress.ip_interface(addr).ip)
                where = f"{key[0]}:{key[1]}"
                if ip in owner:
                    yield (
                        (*iface.path, "addresses", i),
                        f"address {ip} is also on {owner[ip]} in the same L2 segment",
                    )
                else:
                    owner[ip] = where
