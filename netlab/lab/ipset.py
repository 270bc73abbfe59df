"""ipsets in the lab file: a node's `ipsets:`, as `ipset create` and `ipset add` make
them — what kube-proxy's IPVS mode keeps its service addresses and node ports in, so its
iptables rules stay a handful however many services there are — and the checks the
kernel would otherwise make one element at a time (or not at all).

A set has a type, which says what an element is made of (`hash:ip,port`: an address and
a protocol:port) and how it is stored (hash or bitmap), a family (hash types), and its
members, written as `ipset add` takes them and `ipset list` shows them:
`10.96.0.10,tcp:80`, `10.244.0.3,tcp:8080,10.244.0.3`, `10.0.0.0/8`, `30080`.

Pure: no kernel here (netlab.kernel.ipset creates them).
"""

import difflib
import ipaddress
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from netlab.lab.source import Complaint, Path
from netlab.lab.values import Base

# What an element of each type is made of, part by part (ipset(8), "SET TYPES").
TYPES: dict[str, tuple[str, ...]] = {
    "hash:ip": ("ip",),
    "hash:net": ("net",),
    "hash:ip,port": ("ip", "port"),
    "hash:net,port": ("net", "port"),
    "hash:ip,port,ip": ("ip", "port", "ip"),
    "hash:ip,port,net": ("ip", "port", "net"),
    "hash:net,port,net": ("net", "port", "net"),
    "hash:net,net": ("net", "net"),
    "hash:ip,mark": ("ip", "mark"),
    "hash:ip,mac": ("ip", "mac"),
    "hash:mac": ("mac",),
    "hash:net,iface": ("net", "iface"),
    "bitmap:ip": ("ip",),
    "bitmap:port": ("port",),
}
# The protocols a port part may name (ipset's own list); a bare port is TCP, as for ipset.
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite")
_SHAPES = {
    "ip": "ADDRESS",
    "net": "ADDRESS[/PREFIX]",
    "port": "[PROTO:]PORT",
    "mark": "MARK",
    "mac": "MAC",
    "iface": "IFNAME",
}
_EXAMPLES = {
    "ip": "10.96.0.10",
    "net": "10.244.0.0/16",
    "port": "tcp:80",
    "mark": "0x4000",
    "mac": "02:42:ac:11:00:02",
    "iface": "eth0",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")
MAX_NAME = 31  # IPSET_MAXNAMELEN is 32 with the NUL
MAX_BITMAP = 65536  # elements a bitmap set may span (ipset's limit for bitmap:ip)
MAX_COMMENT = 255  # IPSET_MAX_COMMENT_SIZE


def _set_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"ipset name {value!r} may use letters, digits and '_.:+-' (no spaces)")
    if len(value) > MAX_NAME:
        raise ValueError(f"ipset name {value!r} is {len(value)} characters; the kernel allows at most {MAX_NAME}")
    return value


def _set_type(value: str) -> str:
    text = value.strip().lower().replace(" ", "")
    if text in TYPES:
        return text
    close = difflib.get_close_matches(text, list(TYPES), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown ipset type {value!r}; {hint}(netlab knows: {', '.join(TYPES)})")


def _member(value: Any) -> Any:
    """A member is written as `ipset add` takes it; YAML reads a bare port as a number."""
    if isinstance(value, bool):
        return value  # let the model say what a member is
    if isinstance(value, int):
        return str(value)
    return value


def _comment(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError("an ipset comment is one line without double quotes (ipset writes it in quotes)")
    if len(value.encode()) > MAX_COMMENT:
        raise ValueError(f"an ipset comment is at most {MAX_COMMENT} bytes, this one {len(value.encode())}")
    return value


class IpSetMember(Base):
    """A member with a comment (the set needs `comment: true`, ipset's comment extension)."""

    entry: Annotated[str, BeforeValidator(_member)]
    comment: Annotated[str, AfterValidator(_comment)]


class IpSet(Base):
    """`ipset create NAME TYPE [family inet|inet6] [range FROM-TO] [hashsize N] [maxelem N]
    [comment]`, then `ipset add NAME MEMBER` for each member."""

    name: Annotated[str, AfterValidator(_set_name)]
    type: Annotated[str, AfterValidator(_set_type)]
    family: Literal[4, 6] = 4  # of a hash set's addresses (ipset's inet, inet6)
    range: Annotated[str, BeforeValidator(_member)] | None = None  # bitmap:port FROM-TO, bitmap:ip FROM-TO or NET
    hashsize: Annotated[int, Field(ge=1, le=2**31)] | None = None  # hash types: the initial table size
    maxelem: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None  # hash types: at most this many members
    comment: bool = False  # the comment extension: members may carry a comment
    members: list[Annotated[str, BeforeValidator(_member)] | IpSetMember] = []


# ---------------------------------------------------------------- elements


@dataclass(frozen=True)
class Element:
    """One member, parsed: its parts in the type's order, and its text as `ipset list`
    shows it (which is how netlab writes it back and compares members)."""

    text: str
    parts: tuple[tuple[str, Any], ...]  # ("ip", "10.0.0.1"), ("net", ("10.0.0.0", 8)), ("port", ("tcp", 80)), …


def entry_text(member: str | IpSetMember) -> str:
    return member.entry if isinstance(member, IpSetMember) else member


def entry_comment(member: str | IpSetMember) -> str | None:
    return member.comment if isinstance(member, IpSetMember) else None


def parse_element(set_type: str, family: int, text: str) -> Element:
    """A member of a set of this type and family, or ValueError saying what is wrong."""
    kinds = TYPES[set_type]
    shape = ",".join(_SHAPES[k] for k in kinds)
    example = ",".join(_EXAMPLES[k] for k in kinds)
    raw = text.strip()
    pieces = raw.split(",")
    if len(pieces) != len(kinds) or not all(pieces):
        raise ValueError(f"{text!r} is not a {set_type} member: one is {shape} (e.g. {example})")
    parts: list[tuple[str, Any]] = []
    shown: list[str] = []
    for kind, piece in zip(kinds, pieces, strict=True):
        value, words = _PARSERS[kind](piece.strip(), family, set_type)
        parts.append((kind, value))
        shown.append(words)
    return Element(",".join(shown), tuple(parts))


def _address(text: str, family: int, set_type: str) -> tuple[Any, str]:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        if "/" in text:
            raise ValueError(
                f"{text!r} has a prefix length, but a {set_type} member holds single addresses "
                "(use a hash:net type for networks)"
            ) from None
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    _family_matches(addr.version, family, text, set_type)
    return str(addr), str(addr)


def _network(text: str, family: int, set_type: str) -> tuple[Any, str]:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        if "host bits set" in str(err):
            fixed = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {fixed}?") from None
        raise ValueError(f"{text!r} is not an address or a network (ADDRESS/PREFIX)") from None
    _family_matches(net.version, family, text, set_type)
    if net.prefixlen == 0:
        halves = "0.0.0.0/1 and 128.0.0.0/1" if net.version == 4 else "::/1 and 8000::/1"
        raise ValueError(
            f"{text!r}: a {set_type} set cannot store a network with a /0 prefix (the kernel "
            f"refuses it); split it: {halves}"
        )
    address = str(net.network_address)
    shown = address if net.prefixlen == net.max_prefixlen else net.with_prefixlen  # as `ipset list` shows it
    return (address, net.prefixlen), shown


def _family_matches(version: int, family: int, text: str, set_type: str) -> None:
    if version != family:
        fix = "give the set `family: 6`" if version == 6 else "drop `family: 6`"
        raise ValueError(
            f"{text!r} is IPv{version}, but the set is IPv{family}; one set holds one family ({fix}, "
            "or use a set per family)"
        )


def _port(text: str, family: int, set_type: str) -> tuple[Any, str]:
    proto, sep, number = text.rpartition(":")
    if set_type == "bitmap:port":
        if sep:
            raise ValueError(
                f"{text!r}: a bitmap:port member is a port number alone, e.g. 30080 (a bitmap:port "
                "set holds ports of any protocol; the rule that uses it says which)"
            )
        return _port_number(text), text
    proto = proto.lower() if sep else "tcp"
    if proto not in PORT_PROTOCOLS:
        raise ValueError(
            f"{text!r}: unknown protocol {proto!r}; a port is PROTO:PORT with PROTO one of "
            f"{', '.join(PORT_PROTOCOLS)} (a bare port is tcp)"
        )
    port = _port_number(number)
    return (proto, port), f"{proto}:{port}"


def _port_number(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def _mark(text: str, family: int, set_type: str) -> tuple[Any, str]:
    try:
        mark = int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a mark: a 32-bit number, decimal or 0x…") from None
    if not 0 <= mark < 2**32:
        raise ValueError(f"{text!r} is not a mark: a 32-bit number, decimal or 0x…")
    return mark, f"0x{mark:08x}"


def _mac(text: str, family: int, set_type: str) -> tuple[Any, str]:
    if not re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", text):
        raise ValueError(f"{text!r} is not a MAC address like 02:42:AC:11:00:02")
    return text.lower(), text.upper()


def _iface(text: str, family: int, set_type: str) -> tuple[Any, str]:
    if len(text.encode()) > 15 or not re.fullmatch(r"[^\s/:,]+", text):
        raise ValueError(f"{text!r} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)")
    return text, text


_PARSERS = {"ip": _address, "net": _network, "port": _port, "mark": _mark, "mac": _mac, "iface": _iface}


# ---------------------------------------------------------------- ranges (bitmap types)


def port_range(text: str) -> tuple[int, int]:
    """bitmap:port's `range FROM-TO` (ipset takes them either way round)."""
    low, sep, high = text.strip().partition("-")
    if not sep:
        raise ValueError(f"range {text!r} is FROM-TO, e.g. 30000-32767")
    a, b = _port_number(low.strip()), _port_number(high.strip())
    return min(a, b), max(a, b)


def address_range(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """bitmap:ip's `range FROM-TO` or `range NET/PREFIX` (IPv4 only)."""
    try:
        if "/" in text:
            net = ipaddress.IPv4Network(text.strip(), strict=False)
            return net.network_address, net.broadcast_address
        low, sep, high = text.strip().partition("-")
        if sep:
            a, b = ipaddress.IPv4Address(low.strip()), ipaddress.IPv4Address(high.strip())
            return min(a, b), max(a, b)
    except ValueError:
        pass
    raise ValueError(f"range {text!r} is FROM-TO or NET/PREFIX of IPv4 addresses, e.g. 10.0.0.0/24")


def range_text(ipset: IpSet) -> str | None:
    """The range as `ipset save` writes it (FROM-TO), or None without one."""
    if ipset.range is None:
        return None
    if ipset.type == "bitmap:port":
        low, high = port_range(ipset.range)
        return f"{low}-{high}"
    a, b = address_range(ipset.range)
    return f"{a}-{b}"


# ---------------------------------------------------------------- checks


def check_node_ipsets(sets: list[IpSet], base: Path) -> Iterator[Complaint]:
    """One node's `ipsets:`: names unique, options that fit the type, members that are
    elements of the type (and of the range, for a bitmap) and are not given twice."""
    names: dict[str, int] = {}
    for i, ipset in enumerate(sets):
        path = (*base, "ipsets", i)
        if ipset.name in names:
            yield (
                (*path, "name"),
                (
                    f"ipset {ipset.name} is already ipsets[{names[ipset.name]}]; the kernel refuses "
                    "a second set of one name (merge their members)"
                ),
            )
        names.setdefault(ipset.name, i)
        bounds = yield from _check_options(ipset, path)
        seen: dict[str, int] = {}
        for j, member in enumerate(ipset.members):
            mpath: Path = (*path, "members", j) + (("entry",) if isinstance(member, IpSetMember) else ())
            try:
                element = parse_element(ipset.type, ipset.family, entry_text(member))
            except ValueError as err:
                yield mpath, str(err)
                continue
            if bounds is not None and not _within(element, bounds):
                yield (
                    mpath,
                    (
                        f"{element.text} is outside the set's range {ipset.range}; a bitmap holds only "
                        "its range (the kernel refuses it: out of range)"
                    ),
                )
            if element.text in seen:
                yield mpath, f"{element.text} is already members[{seen[element.text]}] of ipset {ipset.name}"
            seen.setdefault(element.text, j)
            if isinstance(member, IpSetMember) and not ipset.comment:
                yield (
                    (*path, "members", j, "comment"),
                    ("a member's comment needs the set's comment extension: add `comment: true` to the set"),
                )


def _check_options(ipset: IpSet, path: Path) -> Generator[Complaint, None, tuple[int, int] | None]:
    """The type's own options; returns the bitmap's bounds (None for a hash set)."""
    bitmap = ipset.type.startswith("bitmap:")
    given = ipset.model_fields_set
    if bitmap:
        for key in ("hashsize", "maxelem"):
            if key in given:
                yield (*path, key), f"`{key}:` is an option of hash types; a {ipset.type} set has none"
        if "family" in given and ipset.family == 6:
            yield (
                (*path, "family"),
                (f"a {ipset.type} set has no family" + (" (it is IPv4 only)" if ipset.type == "bitmap:ip" else "")),
            )
        if ipset.range is None:
            example = "30000-32767" if ipset.type == "bitmap:port" else "10.0.0.0/24"
            yield path, f"a {ipset.type} set needs `range:` (e.g. {example}): the bitmap spans it"
            return None
        try:
            if ipset.type == "bitmap:port":
                return port_range(ipset.range)
            low, high = address_range(ipset.range)
        except ValueError as err:
            yield (*path, "range"), str(err)
            return None
        size = int(high) - int(low) + 1
        if size > MAX_BITMAP:
            yield (
                (*path, "range"),
                (
                    f"range {ipset.range} holds {size} addresses; a bitmap:ip set spans at most "
                    f"{MAX_BITMAP} (use hash:ip)"
                ),
            )
            return None
        return int(low), int(high)
    if ipset.range is not None:
        yield (*path, "range"), f"`range:` is an option of bitmap types; a {ipset.type} set has none"
    if ipset.type == "hash:mac" and "family" in given and ipset.family == 6:
        yield (*path, "family"), "a hash:mac set holds no addresses, so it has no family"
    return None


def _within(element: Element, bounds: tuple[int, int]) -> bool:
    kind, value = element.parts[0]
    number = value if kind == "port" else int(ipaddress.ip_address(value))
    return bounds[0] <= number <= bounds[1]
