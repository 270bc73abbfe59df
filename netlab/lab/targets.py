"""Names in checks → addresses: `to: pod4`, `server_saw: pod1`, `reply_src: [pod3, pod4]`.

A check may name a node wherever it means "that machine's address", so a lab's checks
survive renumbering. Pure (lab + topology in, strings out); shared by the load-time
checks, which reject what cannot resolve, and by the check runner.
"""

from __future__ import annotations

import difflib

from netlab import ipcache
from netlab.lab.checks import Probe
from netlab.lab.topology import Topology


class TargetError(ValueError):
    """A name that does not resolve; the message says why and what would."""


def is_address(text: str) -> bool:
    try:
        ipcache.ip_address(text)
    except ValueError:
        return False
    return True


def node_addresses(topo: Topology, node: str, family: int | None = None) -> list[str]:
    """The node's addresses in declaration order; global ones before `lo`'s (a VIP on lo
    is rarely what "that node" means), link-local IPv6 last."""
    found: list[tuple[int, str]] = []
    for iface in topo.of_node(node):
        for addr in iface.settings.addresses:
            ip = ipcache.ip_interface(addr).ip
            if family is not None and ip.version != family:
                continue
            rank = 2 if ip.is_link_local else (1 if iface.name == "lo" else 0)
            found.append((rank, str(ip)))
    return [a for _, a in sorted(found, key=lambda x: x[0])]


def split_target(text: str) -> tuple[str, int | None]:
    """'10.0.0.2' · '10.0.0.2:80' · '[2001:db8::1]:80' · '2001:db8::1' · 'pod4' · 'pod4:8080'."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise TargetError(f"{text!r}: write an IPv6 address with a port as [2001:db8::1]:80")
        return host, _port(text, rest[1:]) if rest else None
    if is_address(text):
        return text, None
    host, sep, port = text.rpartition(":")
    if sep and host and ":" not in host:
        return host, _port(text, port)
    return text, None


def _port(text: str, port: str) -> int:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TargetError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(port)


def probe_target(topo: Topology, nodes: set[str], probe: Probe) -> tuple[str, int | None]:
    """The address and port a probe goes to."""
    if probe.to is None:
        raise TargetError(
            "a probe needs `to:` (an address or a node), or in a lab with `cluster:` `service:` or `pod:`"
        )
    if isinstance(probe.port, str):
        raise TargetError(f"`port: {probe.port}` names a Service's port: it goes with `service:` (or `to: svc/…`)")
    host, port = split_target(probe.to)
    if port is not None and probe.port is not None and port != probe.port:
        raise TargetError(f"`to: {probe.to}` and `port: {probe.port}` name different ports; give the port once")
    port = probe.port if probe.port is not None else port
    family = probe.family or (ipcache.ip_address(probe.src).version if probe.src else None)
    if is_address(host):
        version = ipcache.ip_address(host).version
        if family is not None and family != version:
            raise TargetError(f"{host} is IPv{version}, but the probe is IPv{family}")
        return host, port
    if host not in nodes:
        raise TargetError(f"{host!r} is neither an address nor a node of this lab{_did_you_mean(host, nodes)}")
    addrs = node_addresses(topo, host, family)
    if not addrs:
        fam = f"IPv{family} " if family else ""
        raise TargetError(f"node {host} has no {fam}address to probe; give an address instead")
    return addrs[0], port


def names_to_addresses(topo: Topology, nodes: set[str], names: tuple[str, ...]) -> set[str]:
    """Every address the names stand for (a node stands for all of its addresses)."""
    out: set[str] = set()
    for name in names:
        if is_address(name):
            out.add(str(ipcache.ip_address(name)))
        elif name in nodes:
            out.update(node_addresses(topo, name))
        else:
            raise TargetError(f"{name!r} is neither an address nor a node of this lab{_did_you_mean(name, nodes)}")
    return out


def _did_you_mean(name: str, nodes: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(nodes), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (nodes: {', '.join(sorted(nodes))})"
