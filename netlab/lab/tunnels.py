"""What the kernel refuses of a node's tunnels (ipip, gre, gretap, ip6tnl, ip6gre, geneve)
and VLANs, said at their key before anything is built.

A tunnel module keeps one table of its tunnels per namespace, keyed by their endpoints:
a second one with the same endpoints is refused (EEXIST), and one with none at all is the
module's own fallback device (tunl0, gre0, …), which exists already.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from netlab.lab.model import FALLBACK_DEVICES, Geneve, Vlan, _IpTunnel, _LinkCommon
from netlab.lab.source import Complaint, Path
from netlab.lab.topology import Interface

_FAMILY = {"ipip": 4, "gre": 4, "gretap": 4, "ip6tnl": 6, "ip6gre": 6}
_ENDPOINTS = ("local", "remote", "dev", "ttl", "key")  # what an external or fallback tunnel takes none of


def check_node_tunnels(ifaces: list[Interface], base: Path) -> Iterator[Complaint]:
    seen: dict[tuple[object, ...], str] = {}  # what the kernel tells tunnels apart by → the first one's name
    for iface in ifaces:
        link, path = iface.settings, iface.path
        if iface.fallback:
            yield from _fallback_problems(iface)
            continue
        if isinstance(link, _IpTunnel):
            yield from _tunnel_problems(iface.name, iface.kind, link, path)
        elif isinstance(link, Geneve):
            yield from _geneve_problems(link, path)
        identity = _identity(iface.kind, link)
        if identity is None:
            continue
        if identity in seen:
            same, other = (
                ("link and id", "`id:`") if iface.kind == "vlan" else ("endpoints", "`remote:`, `local:` or `key:`")
            )
            yield (
                path,
                f"{iface.name} is the same {iface.kind} as {seen[identity]} (same {same}); the kernel refuses "
                f"a second one (EEXIST): give it another {other}",
            )
        else:
            seen[identity] = iface.name


def _identity(kind: str, link: _LinkCommon) -> tuple[object, ...] | None:
    if isinstance(link, _IpTunnel):
        return (kind, link.local, link.remote, getattr(link, "key", None), link.dev, link.external)
    if isinstance(link, Geneve):
        return (kind, link.vni, link.remote, link.port, link.external)
    if isinstance(link, Vlan):
        return (kind, link.dev, link.id)
    return None


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _given(link: _LinkCommon) -> list[str]:
    return [k for k in _ENDPOINTS if getattr(link, k, None) is not None]


def _fallback_problems(iface: Interface) -> Iterator[Complaint]:
    link = iface.settings
    module = next(k for k, devices in FALLBACK_DEVICES.items() if iface.name in devices)
    given = _given(link) + (["external"] if getattr(link, "external", False) else [])
    for key in given:
        yield (
            (*iface.path, key),
            f"{iface.name} is the {module} module's fallback device, which the kernel makes in every "
            f"namespace: it has no `{key}:` of its own (it sends to the gateway of the route that "
            "chose it); for a tunnel with endpoints, use another name",
        )


def _tunnel_problems(name: str, kind: str, link: _IpTunnel, path: Path) -> Iterator[Complaint]:
    if link.external:
        for key in _given(link):
            yield (
                (*path, key),
                f"an external {kind} (collect_metadata) takes its endpoints from each packet; remove `{key}:`",
            )
        return
    family = _FAMILY[kind]
    for key in ("local", "remote"):
        value = getattr(link, key)
        if value is not None and ipaddress.ip_address(value).version != family:
            yield (
                (*path, key),
                f"{key} {value} is IPv{6 if family == 4 else 4}; {_a(kind)} tunnel's endpoints are IPv{family}"
                + (" (IPv6 endpoints: ip6tnl or ip6gre)" if family == 4 else " (IPv4 endpoints: ipip or gre)"),
            )
    if not [k for k in _given(link) if k != "ttl"]:  # the kernel tells tunnels apart without the ttl
        device = next(d for d, k in FALLBACK_DEVICES[kind].items() if k == kind)
        yield (
            path,
            f"{_a(kind)} with no `remote:`, `local:`, `dev:` or `key:` is the kernel's fallback device "
            f"{device}, which exists already (EEXIST): name it {device}, or give it an endpoint",
        )


def _geneve_problems(link: Geneve, path: Path) -> Iterator[Complaint]:
    if link.external:
        for key in ("vni", "remote", "ttl"):
            if getattr(link, key) is not None:
                yield (*path, key), f"an external geneve takes the {key} from each packet; remove `{key}:`"
        return
    for key, what in (("vni", "its network identifier"), ("remote", "the far end's address")):
        if getattr(link, key) is None:
            yield path, f"a geneve needs `{key}:`, {what} (or `external: true` for a flow-based device)"
