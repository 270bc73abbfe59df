"""What a route query (RTM_GETROUTE, `ip route get`) may ask: a query the kernel could
never answer is a mistake in the query (QueryError), not a routing answer."""

from __future__ import annotations

import ipaddress

from netlab.observations import ObserveError, RouteQuery

# rtm_getroute_parse_ip_proto() accepts only these; anything else is EOPNOTSUPP
# ("Unsupported ip proto"), SCTP included.
_ROUTE_IP_PROTOS = {4: ("tcp", "udp", "icmp"), 6: ("tcp", "udp", "icmpv6")}


class QueryError(ObserveError, ValueError):
    """A route query the kernel could never answer (caught as either base): iif without
    src, mixed families, an ipproto RTM_GETROUTE does not take, a value out of range."""


def _family(addr: str, what: str) -> int:
    try:
        return ipaddress.ip_address(addr).version
    except ValueError:
        raise QueryError(f"{what} must be an IP address, not {addr!r}") from None


def check_query(q: RouteQuery) -> int:
    """The query's family (4 | 6); QueryError for a query the kernel could never answer
    (a mistake in the query, not a routing answer)."""
    fam = _family(q.dst, "dst")
    if q.src is not None and _family(q.src, "src") != fam:
        raise QueryError(f"src {q.src} and dst {q.dst} are different address families")
    if q.iif is not None and q.src is None:
        # An input lookup of a packet without a source address is a martian: EINVAL,
        # which would read as a blackhole route.
        raise QueryError("an input lookup (iif) needs src: the kernel routes a received packet by both")
    if q.vrf is not None and (q.oif is not None or q.iif is not None):
        raise QueryError(
            "vrf is the output device of a lookup (as `ip route get vrf NAME`): give it without "
            "oif and iif (a packet arriving on iif is routed in the VRF of iif)"
        )
    if q.ipproto is not None and q.ipproto not in _ROUTE_IP_PROTOS[fam]:
        raise QueryError(
            f"RTM_GETROUTE takes ipproto {', '.join(_ROUTE_IP_PROTOS[fam])} for IPv{fam}, not {q.ipproto!r}"
        )
    for name in ("sport", "dport"):
        port = getattr(q, name)
        if port is not None and not (isinstance(port, int) and 0 <= port <= 0xFFFF):
            raise QueryError(f"{name} must be 0..65535, not {port!r}")
    for name in ("fwmark", "uid"):
        value = getattr(q, name)
        if value is not None and not (isinstance(value, int) and 0 <= value <= 0xFFFFFFFF):
            raise QueryError(f"{name} must be 0..0xffffffff, not {value!r}")
    return fam
