"""ipaddress's parsers, memoised: a 500-pod lab parses the same few thousand addresses
many times over (validation, expansion, cross-checks, plan, reconcile), and parsing one
in pure Python costs ~5 µs. The objects are immutable, so sharing them is safe; a
refused text raises ValueError each time, as ipaddress does."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=1 << 16)
def ip_address(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@lru_cache(maxsize=1 << 16)
def ip_interface(text: str) -> IPInterface:
    return ipaddress.ip_interface(text)


@lru_cache(maxsize=1 << 16)
def ip_network(text: str, strict: bool = True) -> IPNetwork:
    return ipaddress.ip_network(text, strict=strict)
