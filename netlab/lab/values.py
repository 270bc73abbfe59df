"""Value types of the lab file: names, addresses, prefixes, marks — each validated on its
own, with a message that says what is wrong and what would be right. Shared by the lab
model (model.py) and the checks (checks.py)."""

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from netlab import ipcache

# Kernel features a lab may require (see netlab.kernel.features for how each is probed).
Feature = Literal[
    "netns",
    "veth",
    "bridge",
    "dummy",
    "vxlan",
    "vrf",
    "ipvs",
    "nftables",
    "conntrack",
    "ipset",
    "br_netfilter",
    "netem",
    "ipip",
    "gre",
    "gretap",
    "ip6tnl",
    "ip6gre",
    "geneve",
    "vlan",
    "bridge_vlan",
    "rule_dscp",
    "rule_dscp_mask",
    "rule_flowlabel",
    "rule_port_mask",
    "drop_reasons",  # the kernel's drop tracepoint with its reason, through a private tracefs (netlab trace)
]

IFNAMSIZ = 15  # the kernel's limit on interface names (16 bytes with the NUL)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_IFNAME_BAD = re.compile(r"[/\s:\x00-\x1f\x7f]")  # the kernel allows control chars; `ip` output would not


class Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- value types


def _name(kind: str, limit: int) -> Any:
    def check(value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{kind} name {value!r} may use only letters, digits, '-' and '_', "
                "and must start with a letter or digit (it becomes part of a namespace name)"
            )
        if len(value) > limit:
            raise ValueError(f"{kind} name {value!r} is {len(value)} characters; at most {limit}")
        return value

    return AfterValidator(check)


LabName = Annotated[str, _name("lab", 32)]
NodeName = Annotated[str, _name("node", 48)]


def _check_ifname(value: str) -> str:
    size = len(value.encode("utf-8", "surrogatepass"))  # the kernel counts bytes, not characters
    if not value or size > IFNAMSIZ:
        length = f"{len(value)} characters" if size == len(value) else f"{size} bytes ({len(value)} characters)"
        unit = "" if size == len(value) else " bytes"
        raise ValueError(f"interface name {value!r} is {length}; Linux allows 1 to {IFNAMSIZ}{unit}")
    if value in (".", "..") or _IFNAME_BAD.search(value):
        raise ValueError(
            f"interface name {value!r} may not be '.', '..' or contain '/', ':', whitespace or control characters"
        )
    return value


IfName = Annotated[str, AfterValidator(_check_ifname)]


def _why_not_ip(text: str) -> str:
    """Which part of `text` (no prefix length) keeps it from being an address: ipaddress's
    own message repeats the whole input and never says which octet or group is wrong."""
    if ":" not in text:
        octets = text.split(".")
        if len(octets) == 4 and all(o.isdigit() for o in octets):
            for o in octets:
                if int(o) > 255:
                    return f"{o} is out of range; IPv4 octets go from 0 to 255"
                if len(o) > 1 and o.startswith("0"):
                    return f"{o} has a leading zero, which some tools read as octal; write {int(o)}"
        return f"{text!r} is not an IPv4 or IPv6 address"
    return f"{text!r} is not a valid IPv6 address"


def _why_not_prefixlen(text: str, addr: str) -> str | None:
    version = ipcache.ip_address(addr).version
    top = 32 if version == 4 else 128
    if not text.isdigit():
        return f"the prefix length /{text} is not a number from 0 to {top}"
    if int(text) > top:
        return f"the prefix length /{text} is too long; IPv{version} allows /0 to /{top}"
    return None


def _why_not_net(text: str) -> str:
    addr, _, length = text.partition("/")
    try:
        ipcache.ip_address(addr)
    except ValueError:
        return _why_not_ip(addr)
    return _why_not_prefixlen(length, addr) or "not an address with prefix length"


def _check_interface_address(value: Any) -> str:
    text = str(value)
    if "/" not in text:
        raise ValueError(f"address {text!r} needs a prefix length, e.g. {text}/24 (or /32, /128 for a host address)")
    try:
        iface = ipcache.ip_interface(text)
    except ValueError:
        raise ValueError(f"address {text!r}: {_why_not_net(text)}") from None
    return iface.with_prefixlen


def _check_ip(value: Any) -> str:
    text = str(value)
    try:
        return str(ipcache.ip_address(text))
    except ValueError:
        if "/" in text:
            addr = text.partition("/")[0]
            raise ValueError(f"{text!r} has a prefix length; here write only the address ({addr})") from None
        raise ValueError(_why_not_ip(text)) from None


def _check_prefix(value: Any) -> str:
    text = str(value)
    if text == "default":
        return text
    try:
        net = ipcache.ip_network(text, strict=True)
    except ValueError as err:
        if "host bits set" in str(err):
            fixed = ipcache.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {fixed}?") from None
        why = _why_not_net(text) if "/" in text else _why_not_ip(text)
        if why.endswith("is not an IPv4 or IPv6 address"):  # nothing address-like: show the forms
            why += " (write e.g. 10.0.0.0/24, 2001:db8::/64, a host address, or 'default')"
        raise ValueError(f"{text!r} is not a prefix: {why}") from None
    return net.with_prefixlen


InterfaceAddress = Annotated[str, BeforeValidator(_check_interface_address)]
IpAddress = Annotated[str, BeforeValidator(_check_ip)]
Prefix = Annotated[str, BeforeValidator(_check_prefix)]


def _check_mac(value: Any) -> str:
    text = str(value).lower()
    if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", text):
        raise ValueError(f"{value!r} is not a MAC address like 02:42:ac:11:00:02")
    if int(text[:2], 16) & 1:
        unicast = f"{(int(text[:2], 16) & ~1) | 2:02x}{text[2:]}"  # clear multicast, set local bit
        raise ValueError(
            f"{value!r} is a multicast MAC (lowest bit of the first byte set), which no interface "
            f"may have; use a locally administered unicast one such as {unicast}"
        )
    return text


MacAddress = Annotated[str, BeforeValidator(_check_mac)]


def _check_peer(value: Any) -> str:
    text = str(value)
    node, sep, ifname = text.partition(":")
    if not sep or not node or not ifname:
        example = f"{node or 'pod1'}:{ifname or 'eth0'}"  # the user's own names where given
        raise ValueError(f"peer {text!r} must be NODE:IFNAME, e.g. {example}")
    _check_ifname(ifname)
    return text


PeerRef = Annotated[str, BeforeValidator(_check_peer)]


def _check_mark(value: Any) -> str:
    """fwmark as 'VALUE' or 'VALUE/MASK' (decimal or 0x-hex), normalised to hex."""
    text = str(value) if not isinstance(value, int) or isinstance(value, bool) else hex(value)
    parts = text.split("/")
    try:
        nums = [int(p, 0) for p in parts]
    except ValueError:
        raise ValueError(f"fwmark {value!r} must be a number or VALUE/MASK, e.g. 0x4000/0x4000") from None
    if len(nums) > 2 or any(not 0 <= n < 2**32 for n in nums):
        raise ValueError(f"fwmark {value!r} must be 32-bit VALUE or VALUE/MASK")
    return "/".join(hex(n) for n in nums)


Mark = Annotated[str, BeforeValidator(_check_mark)]
TableRef = Annotated[int | str, Field(union_mode="left_to_right")]
Mtu = Annotated[int, Field(ge=68, le=65535)]


def _port_range(value: Any) -> Any:
    """`80` or `"1000-2000"` → (low, high); anything else is left for the type to refuse."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        low, sep, high = value.partition("-")
        if low.strip().isdigit() and (not sep or high.strip().isdigit()):
            return (int(low), int(high) if sep else int(low))
    return value


def _ordered(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] > value[1]:
        raise ValueError(f"the range {value[0]}-{value[1]} runs backwards; write the low end first")
    return value


PortRange = Annotated[
    tuple[Annotated[int, Field(ge=0, le=65535)], Annotated[int, Field(ge=0, le=65535)]],
    BeforeValidator(_port_range),
    AfterValidator(_ordered),
]
UidRange = Annotated[
    tuple[Annotated[int, Field(ge=0, lt=2**32)], Annotated[int, Field(ge=0, lt=2**32)]],
    BeforeValidator(_port_range),
    AfterValidator(_ordered),
]


# The IP header's DS field (the old TOS byte): DSCP in the top six bits, ECN in the low two.
Dsfield = Annotated[int, Field(ge=0, le=255)]
Dscp = Annotated[int, Field(ge=0, le=63)]
FlowLabel = Annotated[int, Field(ge=0, le=0xFFFFF)]  # IPv6's 20-bit flow label
Mask16 = Annotated[int, Field(ge=0, le=0xFFFF)]


def _number(value: Any) -> Any:
    """`0x1f`, `31` (strings, as `ip` takes them) → 31; anything else is left for the type."""
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return value
    return value


def split_masked(data: Any, keys: tuple[str, ...]) -> Any:
    """`KEY: VALUE/MASK` (as `ip rule` writes `sport 0x0f00/0xff00`, `dscp 8/0x38`,
    `flowlabel 0x12345/0xfffff`) → KEY: VALUE and KEY_mask: MASK. Left alone when it does
    not parse: the field's own type then names what is wrong, at its key."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and "/" in value and f"{key}_mask" not in out:
            number, mask = (_number(part) for part in value.split("/", 1))
            if isinstance(number, int) and isinstance(mask, int):
                out[key], out[f"{key}_mask"] = number, mask
    return out


Number = BeforeValidator(_number)
