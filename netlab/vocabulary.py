"""The small facts of Linux networking that every layer spells: ADDRESS:PORT with IPv6
brackets, IP protocol numbers, routing-table names and numbers, firewall marks.

Each is defined once here, so a lab file, a plan line, a kube-proxy rule and a probe's
verdict always say the same thing the same way. A leaf module: it imports nothing of
netlab, so the model, the planner, the kernel layer and the probes can all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

# ---------------------------------------------------------------- ADDRESS:PORT

NoPort = Literal["zero", "address", "bracketed"]


def host_port(address: str, port: int | None, *, no_port: NoPort = "zero") -> str:
    """'10.0.0.1:80', '[2001:db8::1]:80': an IPv6 address goes in brackets before a port.

    `no_port` says what a port of 0 or None becomes, because the tools we imitate differ:
    "zero" writes it as 0 (ipvsadm -L's `10.0.0.1:0`, a fwmark service's real), "address"
    writes the address alone (ipvsadm's -t/-r options refuse `[2001:db8::1]` without a
    port; a probe's ICMP target), "bracketed" writes the address alone but an IPv6 one
    still in brackets (ipvsadm -L's words in our messages, `TCP [2001:db8::1]`).
    """
    v6 = ":" in address
    if port:
        return f"[{address}]:{port}" if v6 else f"{address}:{port}"
    if no_port == "zero":
        return f"[{address}]:0" if v6 else f"{address}:0"
    if no_port == "bracketed" and v6:
        return f"[{address}]"
    return address


# The most a probe's payload may be: one UDP datagram or echo request, IPv4 or IPv6.
MAX_PAYLOAD = 65000


# ---------------------------------------------------------------- IP protocols

# /etc/protocols' numbers, by the names the lab file, `ip rule` and conntrack use.
DSCP_MASK = 0x3F  # all six DSCP bits: the mask of a `dscp` selector without one
ECN_MASK = 0x03  # the DS field's low two bits: ECN, which no rule may select and TCP sets itself
FLOWLABEL_MASK = 0xFFFFF  # all 20 bits of IPv6's flow label: the mask of a `flowlabel` without one
IP_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
_PROTO_NAMES = {number: name for name, number in IP_PROTOS.items()}


def proto_name(number: int) -> str:
    """'tcp' for 6; a protocol without a name here stays a number ('47')."""
    return _PROTO_NAMES.get(number, str(number))


# ---------------------------------------------------------------- routing tables

# The tables every namespace has (RT_TABLE_DEFAULT/MAIN/LOCAL), by iproute2's names; a
# lab may name them, and may name its own in `tables:`.
BUILTIN_TABLES = {"default": 253, "main": 254, "local": 255}
_TABLE_NAMES = {0: "unspec", **{number: name for name, number in BUILTIN_TABLES.items()}}


def table_number(table: int | str, lab_tables: Mapping[str, int]) -> int:
    """A lab's table reference — a number, a name from its `tables:` or a built-in name —
    as the kernel's number (KeyError for a name neither knows)."""
    if isinstance(table, int):
        return table
    return lab_tables[table] if table in lab_tables else BUILTIN_TABLES[table]


def table_name(number: int | None) -> str:
    """A table as `ip route` and `ip rule` print it: 'main', or the number ('?' if unknown)."""
    return "?" if number is None else _TABLE_NAMES.get(number, str(number))


def table_words(table: int | str | None, lab_tables: Mapping[str, int] | None = None) -> str:
    """A table for a message, with its name when it has one: 'main (254)', 'vpn (100)'."""
    if table is None:
        return "no table"
    named = {**BUILTIN_TABLES, **(lab_tables or {})}
    names = [name for name, number in named.items() if number == table]
    return f"{names[0]} ({table})" if names else str(table)


# ---------------------------------------------------------------- firewall marks


def parse_fwmark(text: str) -> tuple[int, int | None]:
    """'0x4000/0x4000' → (0x4000, 0x4000); '0x1' → (1, None): no mask, which `ip rule` makes
    0xffffffff. Takes the model's normalised text (hex), and decimal too."""
    value, _, mask = text.partition("/")
    return int(value, 0), (int(mask, 0) if mask else None)


# ---------------------------------------------------------------- tc's units


def format_duration(us: int) -> str:
    """A time in microseconds as tc writes it: the largest unit that keeps it short (100ms,
    1.5s, 250us)."""
    if us >= 1_000_000 and us % 10_000 == 0:
        return f"{us / 1_000_000:g}s"
    if us >= 1000 and us % 10 == 0:
        return f"{us / 1000:g}ms"
    return f"{us}us"


def format_rate(bits: int) -> str:
    """A rate in bits per second as tc writes it: 10mbit, 1gbit, 1500kbit, 800bit."""
    for unit, size in (("gbit", 1000**3), ("mbit", 1000**2), ("kbit", 1000)):
        if bits >= size and bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"
