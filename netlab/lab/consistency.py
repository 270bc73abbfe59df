"""Cross-object rules, run on a lab whose every field is already valid on its own.

Each rule returns complaints as (key path, message); `load` turns them into Problems
with file and line. Nothing here touches the kernel.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator

from netlab import ipcache
from netlab.lab.check_refs import check_checks
from netlab.lab.ipset import check_node_ipsets
from netlab.lab.ipvs import check_node_ipvs
from netlab.lab.ipvs import check_sysctl as check_ipvs_sysctl
from netlab.lab.model import Lab, Node, Route, Rule, Vrf, Vxlan
from netlab.lab.source import Complaint
from netlab.lab.topology import Interface, Topology, fallback_devices
from netlab.lab.tunnels import check_node_tunnels
from netlab.vocabulary import BUILTIN_TABLES, ECN_MASK, table_number, table_words

_SYSCTL_RE = re.compile(r"^net[./][A-Za-z0-9_.\-/]+$")  # dots, or slashes (sysctl(8): net/ipv4/conf/flannel.1/…)


def route_family(route: Route) -> int:
    """IPv4 or IPv6, from the first of to/via/src that says; `family:` for a bare default."""
    for value in (route.to, route.via, route.src):
        if value and value != "default":
            return ipcache.ip_network(value, strict=False).version
    return route.family or 4


IPTOS_TOS_MASK = 0x1E  # what fib4_rule_configure() accepts in an IPv4 rule's tos


def rule_family(rule: Rule) -> int:
    for value in (rule.from_, rule.to):
        if value and value != "default":
            return ipcache.ip_network(value, strict=False).version
    if rule.ipproto == "icmpv6" or (rule.family is None and rule.flowlabel is not None):
        return 6
    return rule.family or 4


def rule_ds_field(rule: Rule) -> tuple[int | None, int | None]:
    """(tos, dscp) as the rule is sent: the TOS byte in the header where every kernel
    takes it (`tos:`; a `dscp:` IPv6 rule; an IPv4 one up to 7), else FRA_DSCP."""
    if rule.tos is not None or rule.dscp is None:
        return rule.tos, None
    if rule.dscp_mask is None and (rule_family(rule) == 6 or not (rule.dscp << 2) & ~IPTOS_TOS_MASK):
        return rule.dscp << 2, None
    return None, rule.dscp


def rule_features(rule: Rule) -> set[str]:
    """The kernel features (netlab.kernel.features) the rule's selectors need."""
    needs = set()
    if rule_ds_field(rule)[1] is not None:
        needs.add("rule_dscp")
    if rule.dscp_mask is not None:
        needs.add("rule_dscp_mask")
    if rule.flowlabel is not None:
        needs.add("rule_flowlabel")
    if rule.sport_mask is not None or rule.dport_mask is not None:
        needs.add("rule_port_mask")
    return needs


def check_lab(lab: Lab, topo: Topology) -> list[Complaint]:
    complaints: list[Complaint] = []
    if not lab.nodes:
        complaints.append(
            (
                ("nodes",),
                "a lab needs at least one node: add `nodes:` (e.g. `nodes: {pod1: {}}`) or a `cluster:` section",
            )
        )
    complaints += _check_tables(lab)
    complaints += check_checks(lab, topo)
    complaints += _check_addresses(lab, topo)
    complaints += _check_bridge_ports(topo)
    fallbacks = set(fallback_devices(lab))  # tunl0, gre0, …: every namespace has them
    for node_name, node in lab.nodes.items():
        ifaces = topo.of_node(node_name)
        names = {i.name for i in ifaces} | {"lo"} | fallbacks
        base = ("nodes", node_name)
        local = {ipcache.ip_interface(a).ip for i in ifaces for a in i.settings.addresses}
        complaints += _node_routes_problems(lab, node, ifaces, base)
        for i, rule in enumerate(node.rules):
            complaints += _check_rule(lab, rule, (*base, "rules", i), node.rules)
        complaints += _check_neighbors_fdb(node, ifaces, base)
        complaints += check_node_ipvs(node.ipvs, base, {str(a) for a in local})
        complaints += check_node_ipsets(node.ipsets, base)
        for key in node.sysctls:
            complaints += _sysctl_problems(key, names, (*base, "sysctls", key))
        for ifname, link in node.links.items():
            if isinstance(link, Vxlan):
                complaints += _check_vxlan(link, (*base, "links", ifname))
        complaints += check_node_tunnels(ifaces, base)
        complaints += _check_vrfs(lab, node, base)
    return complaints


def _node_routes_problems(
    lab: Lab, node: Node, ifaces: list[Interface], base: tuple[str | int, ...]
) -> list[Complaint]:
    """Each route on its own, whether its gateway is reachable, and routes the kernel
    refuses together."""
    complaints: list[Complaint] = []
    names = {i.name for i in ifaces} | {"lo"}
    connected = _connected(ifaces, node.routes, _vrf_tables(lab, node, ifaces))
    local = {ipcache.ip_interface(a).ip for i in ifaces for a in i.settings.addresses}
    down = {i.name for i in ifaces if not i.settings.up}
    seen_routes: dict[tuple[object, ...], int] = {}
    for i, route in enumerate(node.routes):
        complaints += _route_problems(lab, route, (*base, "routes", i), names)
        complaints += _check_reachable(route, (*base, "routes", i), connected, local, _table_key(lab, route.table))
        if route.dev in down:
            complaints.append(
                (
                    (*base, "routes", i, "dev"),
                    (
                        f"{route.dev} is declared `up: false`; the kernel refuses routes through a "
                        "link that is down (bring it up, or drop the route)"
                    ),
                )
            )
        # The kernel keys a route by table, family, destination and metric: a second one
        # with the same key is refused with EEXIST.
        route_key = (_table_key(lab, route.table), route_family(route), route.to, route.metric or 0)
        if route_key in seen_routes:
            complaints.append(
                (
                    (*base, "routes", i, "to"),
                    (
                        f"the same route as routes[{seen_routes[route_key]}] (same table, destination and "
                        "metric); the kernel refuses a second one (EEXIST): remove it or give it another `metric:`"
                    ),
                )
            )
        seen_routes.setdefault(route_key, i)
    return complaints


def _sysctl_problems(key: str, names: set[str], path: tuple[str | int, ...]) -> list[Complaint]:
    """A sysctl key names a network sysctl, and an interface the node has."""
    complaints: list[Complaint] = []
    ifname = _sysctl_interface(key, names)
    if ifname is not None and ifname not in names | {"all", "default"}:
        complaints.append(
            (
                path,
                (
                    f"sysctl {key!r} names interface {ifname!r}, which this node does not have "
                    f"(it has: {', '.join(sorted(names))}; or use all/default)"
                ),
            )
        )
    if ".." in key or "//" in key:  # a path step up (or an empty one) would leave net.*
        complaints.append(
            (path, f"sysctl {key!r} may not contain '..' or '//'; name a key under net., e.g. net.ipv4.ip_forward")
        )
    elif not _SYSCTL_RE.match(key):
        complaints.append(
            (
                path,
                f"sysctl {key!r} is not a network sysctl; only net.* keys (e.g. "
                "net.ipv4.ip_forward) can be set, and only inside the lab's namespace",
            )
        )
    elif (why := check_ipvs_sysctl(key)) is not None:
        complaints.append((path, why))
    return complaints


VRF_MIN_MTU = 1280  # vrf_setup(): dev->min_mtu = IPV6_MIN_MTU


def _check_vrfs(lab: Lab, node: Node, base: tuple[str | int, ...]) -> Iterator[Complaint]:
    """A VRF's table resolves, is a table of its own (not main/local/default) and is not
    another VRF's of the same node."""
    seen: dict[int, str] = {}
    for ifname, link in node.links.items():
        if not isinstance(link, Vrf):
            continue
        path = (*base, "links", ifname)
        if link.mtu is not None and link.mtu < VRF_MIN_MTU:
            yield (
                (*path, "mtu"),
                (
                    f"a vrf's MTU is at least {VRF_MIN_MTU} (IPv6's minimum; the kernel refuses less: \"mtu less than "
                    "device minimum\"); leave it out (the VRF device does not limit its interfaces' MTU)"
                ),
            )
        if not _table_ok(lab, link.table):
            yield from _table_complaint(lab, link.table, path)
            continue
        number = _table_key(lab, link.table)
        assert isinstance(number, int)
        if number == 0 or number >= 2**32:
            yield (
                (*path, "table"),
                (
                    f'table {number} is not a VRF table (the kernel refuses it: "Invalid VRF table id"); '
                    "use 1 to 252 or a number above 255"
                ),
            )
        elif number in BUILTIN_TABLES.values():
            builtin = next(k for k, v in BUILTIN_TABLES.items() if v == number)
            what = (
                f"{builtin} is a built-in table ({number})"
                if link.table == builtin
                else f"{number} is the built-in table {builtin!r}"
            )
            yield (
                (*path, "table"),
                (
                    f"table {what}; a VRF needs a table of its own, "
                    "which its interfaces' routes move into (e.g. `tables: {" + ifname + ": 10}` and "
                    f"`table: {ifname}`)"
                ),
            )
        elif number in seen:
            yield (
                (*path, "table"),
                (
                    f"vrf {seen[number]} of this node already uses table {link.table}"
                    + (f" ({number})" if not isinstance(link.table, int) else "")
                    + "; two VRFs sharing a table are one VRF (the kernel takes it only while net.vrf.strict_mode "
                    "is 0): give each its own table"
                ),
            )
        seen.setdefault(number, ifname)


def _check_tables(lab: Lab) -> Iterator[Complaint]:
    by_id: dict[int, str] = {}
    for name, number in lab.tables.items():
        path = ("tables", name)
        if name.isdigit():
            yield (
                path,
                (
                    f"table name {name!r} is a number; use a name like 'vrf2' (a route or rule "
                    f"can say `table: {name}` without declaring it)"
                ),
            )
        # Say which clash it is: re-declaring a built-in needs no fix but deleting the line.
        if name in BUILTIN_TABLES:
            yield (
                path,
                (f"table {name!r} is built in ({BUILTIN_TABLES[name]}); use `table: {name}` without declaring it"),
            )
        elif number in BUILTIN_TABLES.values():
            builtin = next(k for k, v in BUILTIN_TABLES.items() if v == number)
            yield (
                path,
                (
                    f"table number {number} is the built-in table {builtin!r}; pick another "
                    "number (1 to 252 are free, and so is anything above 255)"
                ),
            )
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


def _route_problems(lab: Lab, route: Route, path: tuple[str | int, ...], names: set[str]) -> Iterator[Complaint]:
    yield from _table_complaint(lab, route.table, path)
    family = route_family(route)
    # Name what made the route IPv4 or IPv6, so the user sees which of the two to change.
    why = f"to: {route.to}" if route.to != "default" else f"via: {route.via}"
    for key in ("via", "src"):
        value = getattr(route, key)
        if value and ipcache.ip_address(value).version != family:
            yield (
                (*path, key),
                (
                    f"{key} {value} is IPv{6 if family == 4 else 4}, but the route is IPv{family} "
                    f"({why}); a route and its {key} must be of one family"
                ),
            )
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
        if route.via and ipcache.ip_address(route.via).is_link_local and not route.dev:
            yield (*path, "via"), f"{route.via} is link-local; add `dev:` to say which link"
    else:
        for key in ("via", "dev", "onlink"):
            if getattr(route, key):
                yield (*path, key), f"a {route.type} route has no `{key}`; remove it"


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _table_key(lab: Lab, table: int | str | None) -> int | str:
    if table is None:
        return BUILTIN_TABLES["main"]
    return table_number(table, lab.tables) if _table_ok(lab, table) else table  # _table_complaint reports it


def _sysctl_interface(key: str, names: set[str]) -> str | None:
    """The interface a per-interface sysctl names (net.ipv4.conf.IF.x, net/ipv6/neigh/IF/x),
    or None for other keys. In the dotted form an interface name may itself contain dots
    (flannel.1): everything between the table and the last part is the name."""
    parts = key.split("/") if "/" in key else key.split(".")
    if len(parts) < 5 or parts[0] != "net" or parts[1] not in ("ipv4", "ipv6") or parts[2] not in ("conf", "neigh"):
        return None
    return parts[3] if "/" in key else ".".join(parts[3:-1])


InVrf = tuple[str, int]  # (the VRF device, its table number)


def _vrf_tables(lab: Lab, node: Node, ifaces: list[Interface]) -> dict[str, InVrf]:
    """Interface → the VRF it is in and that VRF's table (a VRF device: its own), for a node's VRFs."""
    vrfs = {
        name: (name, t)
        for name, link in node.links.items()
        if isinstance(link, Vrf) and isinstance(t := _table_key(lab, link.table), int)
    }
    out = dict(vrfs)
    for iface in ifaces:
        if iface.master in vrfs:
            out[iface.name] = vrfs[iface.master]
    return out


def _connected(
    ifaces: list[Interface], routes: list[Route], vrf_of: dict[str, InVrf] | None = None
) -> list[tuple[str, Net, str, InVrf | None]]:
    """What a node reaches without a gateway: (device, network, how it is known, the VRF
    it is in or None) for each interface address and each gateway-less `dev:` route. An
    address of an interface in a VRF gives a connected route in the VRF's table only."""
    vrf_of = vrf_of or {}
    out: list[tuple[str, Net, str, InVrf | None]] = []
    for iface in ifaces:
        if not iface.settings.up:  # the kernel reaches nothing through an admin-down link
            continue
        for addr in iface.settings.addresses:
            out.append(
                (iface.name, ipcache.ip_interface(addr).network, f"{addr} on {iface.name}", vrf_of.get(iface.name))
            )
    down = {i.name for i in ifaces if not i.settings.up}
    for r in routes:
        if r.type == "unicast" and r.dev and not r.via and r.dev not in down:
            to = r.to if r.to != "default" else ("0.0.0.0/0" if route_family(r) == 4 else "::/0")
            out.append((r.dev, ipcache.ip_network(to), f"route {r.to} dev {r.dev}", None))
    return out


def _check_reachable(
    route: Route,
    path: tuple[str | int, ...],
    connected: list[tuple[str, Net, str, InVrf | None]],
    local: set[ipaddress.IPv4Address | ipaddress.IPv6Address],
    table: int | str = BUILTIN_TABLES["main"],
) -> Iterator[Complaint]:
    """The kernel refuses a gateway it cannot reach directly ("Nexthop has invalid gateway")
    and a `src:` that is not one of the node's addresses: catch both before `up` starts.
    Without `dev:` the kernel looks the gateway up in the route's own table, then by the
    rules as a local packet would be: a subnet of a VRF's interface counts only for a route
    in that VRF's table (with `dev:` the l3mdev rule finds it in the VRF's table)."""
    if route.type != "unicast":
        return
    if route.via and not route.onlink and not ipcache.ip_address(route.via).is_link_local:
        via = ipcache.ip_address(route.via)
        nets = [n for n in connected if n[1].version == via.version]
        in_vrfs: list[tuple[str, Net, str, InVrf | None]] = []
        if route.dev:
            nets = [n for n in nets if n[0] == route.dev]
        else:
            in_vrfs = [n for n in nets if n[3] is not None and n[3][1] != table]
            nets = [n for n in nets if n[3] is None or n[3][1] == table]
        if not any(via in n[1] for n in nets):
            on = f" on {route.dev}" if route.dev else ""
            have = f"it has {', '.join(n[2] for n in nets)}" if nets else "it has no such subnet"
            hit = next((n for n in in_vrfs if via in n[1]), None)
            if hit is not None and hit[3] is not None:
                vrf, number = hit[3]
                yield (
                    (*path, "via"),
                    (
                        f"gateway {via} is on {hit[0]}'s subnet, in VRF {vrf} (table {number}), but this route is in "
                        f'table {table_words(table)}, where the kernel does not find it ("Nexthop has invalid '
                        f"gateway\"): add `dev: {hit[0]}` (the l3mdev rule then looks it up in the VRF's table), or "
                        f"put the route in VRF {vrf}'s table"
                    ),
                )
                return
            yield (
                (*path, "via"),
                (
                    f"gateway {via} is not on a subnet this node reaches directly{on} ({have}); "
                    "the kernel would refuse the route: use a gateway on a connected subnet, "
                    "or add `onlink: true` and `dev:`"
                ),
            )
    if route.src and ipcache.ip_address(route.src) not in local:
        yield (
            (*path, "src"),
            (
                f"src {route.src} is not an address of this node; the kernel accepts only a local "
                "address as a route's source"
            ),
        )


def _ds_field_complaints(rule: Rule, family: int, path: tuple[str | int, ...]) -> Iterator[Complaint]:
    """What the kernel refuses of a rule's `tos:`/`dscp:`, in its own words (fib_rules)."""
    if rule.tos is not None and rule.dscp is not None:
        yield (*path, "dscp"), "give `tos:` or `dscp:`, not both (the kernel: 'Cannot specify both TOS and DSCP')"
    if rule.tos is not None and rule.tos & ECN_MASK:
        yield (
            (*path, "tos"),
            (
                f"tos {rule.tos:#04x} has ECN bits set (the low two); the kernel refuses the rule: "
                f"'Invalid dsfield (tos): ECN bits must be 0'; the DSCP part is {rule.tos & ~ECN_MASK:#04x}"
            ),
        )
    elif rule.tos is not None and family == 4 and rule.tos & ~IPTOS_TOS_MASK:
        yield (
            (*path, "tos"),
            (
                f"tos {rule.tos:#04x} does not fit an IPv4 rule, which takes the old TOS bits only "
                f"(0x04-0x1c; the kernel: 'Invalid tos'); select `dscp: {rule.tos >> 2}` instead"
            ),
        )
    if rule.dscp_mask is not None and rule.dscp is None:
        yield (
            (*path, "dscp"),
            "a DSCP mask needs a value: `dscp: VALUE/MASK` (the kernel: 'Cannot specify DSCP mask without DSCP value')",
        )
    elif rule.dscp_mask is not None and rule.dscp is not None and rule.dscp & ~rule.dscp_mask:
        yield (
            (*path, "dscp"),
            f"dscp {rule.dscp:#x} has bits outside its mask {rule.dscp_mask:#x} (the kernel: 'Invalid DSCP mask')",
        )


def _mask_complaints(rule: Rule, family: int, path: tuple[str | int, ...]) -> Iterator[Complaint]:
    """Flow label and port masks, as fib_rules.c checks them."""
    if rule.flowlabel is not None or rule.flowlabel_mask is not None:
        value, mask = rule.flowlabel, rule.flowlabel_mask
        if family == 4:
            yield (
                (*path, "flowlabel"),
                "a flow label is IPv6's (the kernel: 'Flow label cannot be specified for IPv4 FIB rules')",
            )
        elif value is None:
            yield (*path, "flowlabel"), "a flow label mask needs a value: `flowlabel: VALUE/MASK`"
        elif mask is not None and value & ~mask:
            yield (
                (*path, "flowlabel"),
                f"flow label {value:#x} has bits outside its mask {mask:#x} (the kernel: 'Flow label and mask do not match')",
            )
    for key, span, mask in (("sport", rule.sport, rule.sport_mask), ("dport", rule.dport, rule.dport_mask)):
        if mask is None:
            continue
        if span is None:
            yield (
                (*path, key),
                f"a port mask needs a port: `{key}: VALUE/MASK` (the kernel: 'Cannot specify port mask without port value')",
            )
        elif span[0] != span[1]:
            yield (
                (*path, key),
                f"a port mask takes one port, not the range {span[0]}-{span[1]} (the kernel: 'Cannot specify port mask for port range')",
            )
        elif span[0] & ~mask:
            yield (
                (*path, key),
                f"{key} {span[0]:#x} has bits outside its mask {mask:#x} (the kernel: 'Invalid port mask')",
            )


def _check_rule(lab: Lab, rule: Rule, path: tuple[str | int, ...], siblings: list[Rule]) -> Iterator[Complaint]:
    yield from _table_complaint(lab, rule.table, path)
    family = rule_family(rule)
    if rule.family is not None and rule.family != family:
        yield (*path, "family"), f"family {rule.family} contradicts the rule's IPv{family} selectors"
    if rule.ipproto in ("icmp", "icmpv6") and rule.ipproto != ("icmp" if family == 4 else "icmpv6"):
        yield (
            (*path, "ipproto"),
            (
                f"ipproto {rule.ipproto} in an IPv{family} rule never matches; "
                f"IPv{family}'s ICMP is {'icmp' if family == 4 else 'icmpv6'}"
            ),
        )
    yield from _ds_field_complaints(rule, family, path)
    yield from _mask_complaints(rule, family, path)
    if rule.action == "goto":
        if rule.goto is None:
            yield (*path, "goto"), "a goto rule needs `goto:` (the priority of the rule to go on at)"
        elif rule.priority is None or rule.goto <= rule.priority:
            yield (
                (*path, "goto"),
                (
                    f"goto {rule.goto} must jump forward: give the rule a `priority:` below {rule.goto} "
                    "(the kernel refuses backward gotos, which could loop)"
                ),
            )
        elif not any(r.priority == rule.goto and rule_family(r) == family for r in siblings):
            prios = sorted({r.priority for r in siblings if r.priority is not None and r is not rule})
            yield (
                (*path, "goto"),
                (
                    f"no IPv{family} rule of this node has priority {rule.goto}"
                    + (f" (priorities: {', '.join(map(str, prios))})" if prios else "")
                    + "; the kernel would keep this goto unresolved and skip it"
                ),
            )
    elif rule.goto is not None:
        yield (*path, "goto"), "`goto:` needs `action: goto`"
    if rule.l3mdev and rule.table is not None:
        yield (*path, "table"), "an l3mdev rule looks up the VRF's own table; remove `table:`"
    fams = {ipcache.ip_network(v, strict=False).version for v in (rule.from_, rule.to) if v and v != "default"}
    if len(fams) > 1:
        v_from = ipcache.ip_network(str(rule.from_), strict=False).version
        yield (
            (*path, "to"),
            (
                f"from {rule.from_} is IPv{v_from} but to {rule.to} is IPv{6 if v_from == 4 else 4}; a rule is "
                "of one family: write one rule per family"
            ),
        )
    if rule.action == "lookup" and rule.table is None and not rule.l3mdev:
        yield path, "a lookup rule needs `table:` (a number or a name from top-level `tables:`)"
    if rule.action != "lookup" and rule.table is not None:
        yield (*path, "table"), f"a {rule.action} rule looks up no table; remove `table:`"


def _check_vxlan(link: Vxlan, path: tuple[str | int, ...]) -> Iterator[Complaint]:
    fams = {ipcache.ip_address(v).version for v in (link.local, link.remote, link.group) if v}
    if len(fams) > 1:
        yield (*path, "local"), "local, remote and group must be of one IP family"
    if link.remote and link.group:
        yield (*path, "group"), "give either `remote:` (unicast) or `group:` (multicast), not both"
    if link.group and not ipcache.ip_address(link.group).is_multicast:
        yield (
            (*path, "group"),
            (
                f"group {link.group} is not a multicast address (IPv4: 224.0.0.0/4, e.g. 239.1.1.1; "
                "IPv6: ff00::/8); for one far end use `remote:`"
            ),
        )
    if link.group and not link.dev:
        yield (*path, "dev"), "a multicast vxlan needs `dev:` (the underlay interface)"
    if link.underlay == "host" and (not link.remote or link.dev):
        yield (
            (*path, "underlay"),
            "a vxlan with `underlay: host` is a point-to-point tunnel between machines: it needs `remote:` "
            "and takes no `dev:` (the host routes it)",
        )


ZERO_MAC = "00:00:00:00:00:00"


def _check_neighbors_fdb(node: Node, ifaces: list[Interface], base: tuple[str | int, ...]) -> Iterator[Complaint]:
    """Static neighbour and FDB entries: on an interface of the node, once each, and (FDB)
    on a device whose table can hold them: a vxlan's own (`self`, with the underlay `dst:`)
    or a bridge port's bridge (`master`). A link declared `up: false` takes them all the same."""
    devices = _Devices(ifaces)
    yield from _neighbor_problems(node, devices, base)
    yield from _fdb_problems(node, devices, base)


class _Devices:
    """A node's interfaces by name (lo aside), for the messages about entries on them."""

    def __init__(self, ifaces: list[Interface]) -> None:
        self.by_name = {i.name: i for i in ifaces if i.kind != "lo"}
        self.has = (
            f"it has: {', '.join(sorted(self.by_name))}" if self.by_name else "it has none; declare one under `links:`"
        )

    def bridge_of(self, iface: Interface) -> str | None:  # a VRF's member is no bridge port
        master = self.by_name.get(iface.master or "")
        return iface.master if master is not None and master.kind == "bridge" else None

    def unknown(self, dev: str) -> str:
        close = difflib.get_close_matches(dev, list(self.by_name), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"device {dev} is not an interface of this node{hint} ({self.has})"


def _neighbor_problems(node: Node, devices: _Devices, base: tuple[str | int, ...]) -> Iterator[Complaint]:
    seen_neighbors: dict[tuple[str, object], int] = {}
    for i, n in enumerate(node.neighbors):
        path = (*base, "neighbors", i)
        if n.dev == "lo":
            yield (
                (*path, "dev"),
                (
                    f"a neighbour entry on lo is of no use (the kernel files it under 0.0.0.0); name the interface "
                    f"{n.to} is reached through ({devices.has})"
                ),
            )
        elif n.dev not in devices.by_name:
            yield (*path, "dev"), devices.unknown(n.dev)
        nkey = (n.dev, ipcache.ip_address(n.to))
        if nkey in seen_neighbors:
            yield (
                (*path, "to"),
                (
                    f"a second entry for {n.to} on {n.dev} (also neighbors[{seen_neighbors[nkey]}]); the kernel "
                    "keeps one per address and device, and the later one replaces the first: keep one"
                ),
            )
        seen_neighbors.setdefault(nkey, i)


def _fdb_problems(node: Node, devices: _Devices, base: tuple[str | int, ...]) -> Iterator[Complaint]:
    by_name = devices.by_name
    seen_fdb: dict[tuple[str, str, object], int] = {}
    unicast_dst: dict[tuple[str, str], tuple[int, str]] = {}  # (vxlan, MAC) → (index, dst)
    on_bridge: dict[tuple[str, str], tuple[int, str]] = {}  # (bridge, MAC) → (index, port)
    for i, f in enumerate(node.fdb):
        path = (*base, "fdb", i)
        fkey = (f.dev, f.lladdr, ipcache.ip_address(f.dst) if f.dst else None)
        if fkey in seen_fdb:
            yield path, f"the same FDB entry as fdb[{seen_fdb[fkey]}] (same dev, lladdr and dst); remove one"
            continue
        seen_fdb[fkey] = i
        iface = by_name.get(f.dev)
        if iface is None:
            yield (*path, "dev"), devices.unknown(f.dev)
        elif isinstance(iface.settings, Vxlan):
            yield from _check_vxlan_fdb(f.lladdr, f.dst, iface.name, iface.settings, path, i, unicast_dst)
        elif (bridge := devices.bridge_of(iface)) is not None:
            if f.dst:
                yield (
                    (*path, "dst"),
                    (
                        f"{f.dev} is a port of bridge {bridge}: the entry pins {f.lladdr} to that port "
                        "(`master static`) and has no `dst:`, which is only for an entry on a vxlan; remove it"
                    ),
                )
            earlier = on_bridge.get((bridge, f.lladdr))
            if earlier is not None and earlier[1] != f.dev:
                yield (
                    (*path, "lladdr"),
                    (
                        f"{f.lladdr} is already pinned to {earlier[1]} in bridge {bridge} (fdb[{earlier[0]}]); "
                        "a bridge has one port per MAC, and the later entry moves it: keep one"
                    ),
                )
            on_bridge.setdefault((bridge, f.lladdr), (i, f.dev))
        elif iface.kind == "bridge":
            ports = sorted(x.name for x in by_name.values() if x.master == f.dev)
            yield (
                (*path, "dev"),
                (
                    f"{f.dev} is the bridge itself; name the port {f.lladdr} is behind"
                    + (
                        f" (its ports: {', '.join(ports)})"
                        if ports
                        else f" (it has none yet: give one `master: {f.dev}`)"
                    )
                ),
            )
        else:
            fits = sorted(x.name for x in by_name.values() if x.kind == "vxlan" or devices.bridge_of(x) is not None)
            yield (
                (*path, "dev"),
                (
                    f"{f.dev} is a {iface.kind} without a bridge master; an FDB entry goes on a vxlan (`self`, with "
                    f"`dst:`) or on a bridge port (`master`): give {f.dev} `master: BRIDGE`, or name one"
                    + (f" (here: {', '.join(fits)})" if fits else "")
                ),
            )


def _check_vxlan_fdb(
    lladdr: str,
    dst: str | None,
    name: str,
    vxlan: Vxlan,
    path: tuple[str | int, ...],
    index: int,
    unicast_dst: dict[tuple[str, str], tuple[int, str]],
) -> Iterator[Complaint]:
    if dst is None:
        yield (
            path,
            (
                f"an FDB entry on vxlan {name} needs `dst:`, the underlay address behind which {lladdr} lives "
                "(the remote node's address, as flanneld writes it); the kernel refuses one without (EINVAL)"
            ),
        )
        return
    own = [(k, v) for k, v in (("local", vxlan.local), ("remote", vxlan.remote), ("group", vxlan.group)) if v]
    family = ipcache.ip_address(own[0][1]).version if own else 4
    version = ipcache.ip_address(dst).version
    if version != family:
        why = (
            f"its {own[0][0]} {own[0][1]} is IPv{family}"
            if own
            else "it has no local, remote or group, which the kernel takes as IPv4"
        )
        fix = f"give an IPv{family} `dst:`" + (", or an IPv6 `local:` to the vxlan" if not own else "")
        yield (
            (*path, "dst"),
            (
                f"dst {dst} is IPv{version}, but vxlan {name} is IPv{family} ({why}); the kernel refuses "
                f"it (EAFNOSUPPORT): {fix}"
            ),
        )
    if lladdr != ZERO_MAC:
        earlier = unicast_dst.get((name, lladdr))
        if earlier is not None and ipcache.ip_address(earlier[1]) != ipcache.ip_address(dst):
            yield (
                (*path, "dst"),
                (
                    f"{lladdr} is already behind {earlier[1]} on {name} (fdb[{earlier[0]}]); the kernel keeps one "
                    f"dst for a MAC and ignores this entry without an error (only {ZERO_MAC}, the flood list, "
                    "takes several): keep one"
                ),
            )
        unicast_dst.setdefault((name, lladdr), (index, dst))


def _check_addresses(lab: Lab, topo: Topology) -> Iterator[Complaint]:
    """The same address twice in one L2 segment (or twice on one interface) is a mistake."""
    for segment in topo.segments():
        owner: dict[str, str] = {}
        for key in [k for k in topo.interfaces if k in segment]:  # declaration order
            iface = topo.interfaces[key]
            for i, addr in enumerate(iface.settings.addresses):
                ip = str(ipcache.ip_interface(addr).ip)
                where = f"{key[0]}:{key[1]}"
                if owner.get(ip) == where:
                    yield (*iface.path, "addresses", i), f"address {ip} is listed twice on this interface"
                elif ip in owner:
                    yield (
                        (*iface.path, "addresses", i),
                        f"address {ip} is also on {owner[ip]} in the same L2 segment",
                    )
                else:
                    owner[ip] = where


# linux/net/bridge/br_private.h: BR_PORT_BITS 10; port number 0 is reserved (find_portno).
BR_MAX_PORTS = 1 << 10


def _check_bridge_ports(topo: Topology) -> Iterator[Complaint]:
    """The kernel numbers a bridge's ports 1 to BR_MAX_PORTS - 1, and refuses one more
    with EXFULL only when `up` reaches it."""
    ports: dict[tuple[str, str], int] = {}
    for iface in topo.interfaces.values():
        if iface.master is not None:
            ports[(iface.node, iface.master)] = ports.get((iface.node, iface.master), 0) + 1
    for (node, name), count in ports.items():
        bridge = topo.interfaces.get((node, name))
        if bridge is not None and bridge.kind == "bridge" and count >= BR_MAX_PORTS:
            yield (
                bridge.path,
                (
                    f"bridge {name} has {count} ports; the kernel allows at most {BR_MAX_PORTS - 1} on one bridge "
                    f"(BR_MAX_PORTS is {BR_MAX_PORTS} and port number 0 is reserved): spread the ports over "
                    "several bridges"
                ),
            )
