"""The `checks:` section of a lab file: what *should* happen, stated as data.

A check is one of three kinds, told apart by the key it carries:

- `probe:` sends real traffic and judges its outcome (`expect:`), optionally also the
  flow's conntrack entry in some node (`conntrack:`), its IPVS connection in a director
  (`ipvs:`) and the packets seen on an interface while it ran (`capture:`);
- `route:` asks a node's kernel `ip route get …` and judges the answer;
- `rule:` asks whether an ip rule is present (or absent) in a node.

Names given here (nodes, `node:if`) are checked against the lab in `check_refs.py`; values
that name a node *or* an address (`to`, `server_saw`, `icmp_from`, `reply_src`, …) stay
strings until the lab is known.
"""

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, model_validator

from netlab.lab.expect import FORM_TAG, Expect
from netlab.lab.ipvs import normalize_forward
from netlab.lab.values import (
    Base,
    Dscp,
    Dsfield,
    FlowLabel,
    IfName,
    IpAddress,
    Mark,
    NodeName,
    Number,
    PortRange,
    Prefix,
    TableRef,
    UidRange,
)
from netlab.vocabulary import MAX_PAYLOAD

ProbeProto = Literal["icmp", "tcp", "udp", "http"]
Result = Literal["ok", "fail", "timeout", "refused", "unreachable"]
ANSWERED_BY_ICMP = ("refused", "unreachable")  # the outcomes an ICMP error can bring


def result_admits(result: Expect[Result], outcome: str) -> bool:
    """Does a probe's outcome fit the expected result (`fail`: any failure)?"""
    return result.admits(lambda want: outcome != "ok" if want == "fail" else outcome == want)


Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=600)]

_SHARE_RE = re.compile(r"^\s*(?:>=?\s*)?(\d+(?:\.\d+)?)\s*%\s*(?:\.\.\s*(\d+(?:\.\d+)?)\s*%)?\s*$")


def _check_share(value: Any) -> tuple[float, float]:
    """'20%' (at least), '>=20%' (the same), '40%..60%' (a range), or a fraction 0.2."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value <= 1:
            raise ValueError(f"a share is a fraction from 0 to 1 or a percentage like '20%', got {value!r}")
        return (float(value), 1.0)
    if isinstance(value, (list, tuple)) and len(value) == 2:  # already parsed (a model copy)
        return (float(value[0]), float(value[1]))
    m = _SHARE_RE.match(str(value))
    if not m:
        raise ValueError(
            f"a share is '20%' (at least 20 % of the probes), '40%..60%' (a range) or a fraction "
            f"like 0.2, got {value!r}"
        )
    low = float(m.group(1)) / 100
    high = float(m.group(2)) / 100 if m.group(2) else 1.0
    if not 0 <= low <= high <= 1:
        raise ValueError(f"share {value!r} must lie within 0%..100% with the lower bound first")
    return (low, high)


def _check_target(value: Any) -> str:
    """`to:` is an address, a node name, or NODE:PORT / [v6addr]:PORT."""
    text = str(value).strip()
    if not text:
        raise ValueError("`to:` must name an address or a node")
    return text


Target = Annotated[str, BeforeValidator(_check_target)]


def _check_where(value: Any) -> str:
    text = str(value)
    node, sep, ifname = text.partition(":")
    if not sep or not node or not ifname:
        raise ValueError(f"a capture point is NODE:IFNAME, e.g. node1:eth0, got {text!r}")
    return text


Where = Annotated[str, AfterValidator(_check_where)]


def _check_name(value: Any) -> str:
    """A node name or an address."""
    if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        raise ValueError(f"expected a node name or an address, got {value!r}")
    return str(value)


# Node names and addresses are told apart (and checked) in check_refs.py, once the lab is known.
# An expectation of them (Expect[NodeOrAddr]) is one, a list (any of them) or {not: …}.
NodeOrAddr = Annotated[str, BeforeValidator(_check_name)]
Names = Expect[NodeOrAddr]


# In served_by's normal form: every node not listed may serve too (written `{not: …}`).
OTHER_NODES = "*"


def _check_served_by(value: Any) -> dict[str, tuple[float, float]]:
    """Normalised to node → (lowest, highest) share of the probes; only the nodes listed may
    serve. `pod4` = all of them; `[pod3, pod4]` = each one by one of these; a mapping
    gives each node's share; `{not: pod3}` / `{not: [pod3, pod4]}` = none by these."""
    if isinstance(value, dict) and set(value) == {"not"}:
        banned = value["not"] if isinstance(value["not"], list) else [value["not"]]
        if not banned or not all(isinstance(node, str) for node in banned):
            raise ValueError(f"`served_by: {{not: …}}` names a node or a list of nodes, got {value['not']!r}")
        return {**{node: (0.0, 0.0) for node in banned}, OTHER_NODES: (0.0, 1.0)}
    if isinstance(value, dict):
        return {str(node): _check_share(share) for node, share in value.items()}
    if isinstance(value, list):
        if not value:
            raise ValueError("must not be empty: name the node(s) that should serve")
        return {str(node): (0.0, 1.0) for node in value}
    if isinstance(value, str):
        return {value: (1.0, 1.0)}
    raise ValueError(
        "expected a node name, a list of nodes, a mapping node → share like {pod3: 20%, pod4: 20%}, or "
        f"{{not: NODE}}, got {value!r}"
    )


ServedBy = Annotated[dict[str, tuple[float, float]], BeforeValidator(_check_served_by)]


# ---------------------------------------------------------------- probe checks


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"a probe's TTL is a number from 1 to 255, got {value!r}")
    return value


def _check_ttl(value: int) -> int:
    if not 1 <= value <= 255:
        raise ValueError(
            f"a probe's TTL (IPv6: hop limit) is from 1 to 255, got {value}; `ttl: 1` stops at the first router"
        )
    return value


ProbeTtl = Annotated[int, BeforeValidator(_no_bool), AfterValidator(_check_ttl)]


def _check_probe_mark(value: Any) -> int:
    """SO_MARK: one 32-bit number, decimal or 0x-hex (a probe sets a mark, it matches none)."""
    text = str(value).strip()
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"a probe's mark is a number (SO_MARK), e.g. 0x7, got {value!r}")
    if "/" in text:
        raise ValueError(f"a probe sets one mark (SO_MARK), not VALUE/MASK: write {text.split('/')[0]}")
    try:
        mark = value if isinstance(value, int) else int(text, 0)
    except ValueError:
        raise ValueError(f"a probe's mark is a number (SO_MARK), decimal or 0x-hex, got {text!r}") from None
    if not 0 <= mark < 2**32:
        raise ValueError(f"a probe's mark is 32 bits (0 to 0xffffffff), got {text}")
    return mark


ProbeMark = Annotated[int, BeforeValidator(_check_probe_mark)]


def _check_payload(value: Any) -> int | str:
    """Text, hex bytes written `0x…`, or a size in bytes (netlab makes up the bytes)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"a payload is text, hex bytes (0x…) or a size in bytes, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= MAX_PAYLOAD:
            raise ValueError(f"a payload size is 1 to {MAX_PAYLOAD} bytes (one datagram), got {value}")
        return value
    data = payload_bytes(value)
    if not data:
        raise ValueError("an empty payload sends nothing; leave `payload:` out for netlab's own")
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"a payload is at most {MAX_PAYLOAD} bytes (one datagram), got {len(data)}")
    return value


def payload_bytes(value: int | str | None) -> bytes | None:
    """The bytes a probe's `payload:` sends: a size is that many bytes of a pattern that
    does not repeat within 251 bytes (so a shifted or lost block shows)."""
    if value is None:
        return None
    if isinstance(value, int):
        return (bytes(range(251)) * (value // 251 + 1))[:value]
    if value[:2].lower() != "0x":
        return value.encode()
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(
            f"payload {shown!r} is not hex bytes: after 0x, two hex digits per byte (0x48656c6c6f); "
            "text that starts with 0x cannot be sent as text"
        ) from None


ProbePayload = Annotated[int | str, BeforeValidator(_check_payload)]


# A Service port's name (Kubernetes: an IANA service name, lower case, at most 15 characters).
PortName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")]


class Probe(Base):
    """Where a probe goes is `to:` — or, in a lab with `cluster:`, a Kubernetes name that
    the expansion (netlab.expand.targets) turns into `to:`: `service: NAMESPACE/NAME` (its
    cluster IP; `port:` may name the Service's port) or `pod: NAMESPACE/NAME`."""

    from_: NodeName = Field(alias="from")
    to: Target | None = None
    service: Annotated[str, Field(min_length=1)] | None = None
    pod: Annotated[str, Field(min_length=1)] | None = None
    proto: ProbeProto | None = None  # default: tcp when a port is given, else icmp
    port: Annotated[Port | PortName, Field(union_mode="left_to_right")] | None = None
    count: Annotated[int, Field(ge=1, le=10000)] = 1
    timeout: Seconds = 1.0
    src: IpAddress | None = None
    sport: Port | None = None
    family: Literal[4, 6] | None = None  # which of a node's addresses `to: NODE` means
    # IPv4 TTL / IPv6 hop limit of the probe's packets: 1 dies at the first router, which
    # answers ICMP time exceeded (traceroute's first hop).
    ttl: ProbeTtl | None = None
    # The DS field of its packets (IP_TOS / IPV6_TCLASS): raw, or the DSCP (its top six bits).
    tos: Annotated[Dsfield, Number] | None = None
    dscp: Annotated[Dscp, Number] | None = None
    mark: ProbeMark | None = None  # SO_MARK: what its own node's firewall and `fwmark` rules see
    payload: ProbePayload | None = None  # sent, and proved to arrive intact

    @property
    def ds_field(self) -> int | None:
        """The DS field the probe sets (tos, or dscp shifted into place)."""
        return self.dscp << 2 if self.dscp is not None else self.tos


def _percent_number(value: Any) -> Any:
    """5, 5.5, '5%' → 5.0 (percent); anything else is left for the type to refuse."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip().rstrip("%"))
        except ValueError:
            return value
    return value


class _Range(Base):
    """`{min: A, max: B}`: either bound may be left out."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        low, high = self.min, self.max
        if low is None and high is None and not self._other_bounds():
            raise ValueError(self._none_given)
        if low is not None and high is not None and low > high:
            raise ValueError(f"min {low:g} is more than max {high:g}")
        return self

    _none_given: ClassVar[str] = "give `min:`, `max:` or both"

    def _other_bounds(self) -> bool:
        return False

    def words(self, unit: str) -> str:
        """'40..1000 ms', 'at least 40 ms', 'at most 5%'."""
        low, high = self.min, self.max
        if low is not None and high is not None:
            return f"{low:g}..{high:g}{unit}"
        return f"at least {low:g}{unit}" if low is not None else f"at most {high:g}{unit}"


def _milliseconds(value: Any) -> Any:
    """40, 40.5 or '40ms' → 40.0; another unit is refused with the unit the key has."""
    if isinstance(value, str):
        text = value.strip().removesuffix("ms").strip()
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a number of milliseconds (rtt_ms counts in ms: write e.g. 40)"
            ) from None
    return value


Milliseconds = Annotated[float, BeforeValidator(_milliseconds), Field(ge=0, le=600_000)]


class AvgRange(_Range):
    """The answered probes' mean round trip (ping's avg), in milliseconds."""

    min: Milliseconds | None = None
    max: Milliseconds | None = None


class RttRange(_Range):
    """Every answered probe's round trip, in milliseconds: the fastest at least `min`, the
    slowest at most `max`; `avg:` bounds their mean. (An upper bound on every probe fails on
    one probe a loaded or emulated machine delayed; the mean says "no added delay" steadily.)"""

    min: Milliseconds | None = None
    max: Milliseconds | None = None
    avg: AvgRange | None = None

    _none_given: ClassVar[str] = "give `min:`, `max:`, `avg:` or some of them"

    def _other_bounds(self) -> bool:
        return self.avg is not None

    def words(self, unit: str) -> str:
        """'at least 40 ms', 'at most 35 ms and a mean of at most 20 ms', 'a mean of 1..20 ms'."""
        mean = None if self.avg is None else f"a mean of {self.avg.words(unit)}"
        if self.min is None and self.max is None:
            return mean or ""
        return super().words(unit) + (f" and {mean}" if mean else "")


Percentage = Annotated[float, BeforeValidator(_percent_number), Field(ge=0, le=100)]


class LossRange(_Range):
    """The share of the probes that got no answer, in percent (5 or '5%')."""

    min: Percentage | None = None
    max: Percentage | None = None


NftFamily = Literal["ip", "ip6", "inet", "arp", "bridge", "netdev"]


class FirewallRule(Base):
    """A rule of a node's firewall (an nftables ruleset or an iptables dump), named by its
    comment, by words of its text or by its nftables handle, within the family, table and
    chain given (each optional)."""

    family: NftFamily | None = None  # iptables dumps: ip (iptables) or ip6 (ip6tables)
    table: Annotated[str, Field(min_length=1)] | None = None
    chain: Annotated[str, Field(min_length=1)] | None = None
    comment: Annotated[str, Field(min_length=1)] | None = None  # nft `comment "…"`, iptables `-m comment`
    rule: Annotated[str, Field(min_length=1)] | None = None  # words of the rule as nft list / iptables-save write it
    handle: Annotated[int, Field(ge=1)] | None = None  # nftables' rule handle (`nft -a list`)

    def what(self) -> str:
        """'the rule with comment "svc web"', 'rule handle 4', 'the rule `tcp dport 80 drop`'."""
        if self.comment is not None:
            return f'the rule with comment "{self.comment}"'
        if self.handle is not None:
            return f"rule handle {self.handle}"
        return f"the rule `{self.rule}`"

    def scope(self) -> str:
        """'ip filter forward': the part of the ruleset asked about ('' for all of it)."""
        return " ".join(x for x in (self.family, self.table, self.chain) if x)


DROPPED_BY_IDS = ("comment", "rule", "handle", "policy")  # ways to name what dropped: exactly one


class DroppedBy(FirewallRule):
    """The firewall rule or chain policy of a node that dropped the probes, as the probe's
    nftables trace saw it (any ruleset: nftables, an iptables dump, kube-proxy's)."""

    node: NodeName
    policy: bool = False  # true: the policy of `chain:` dropped them, no rule of it

    def what(self) -> str:
        return f"the policy of chain {self.chain}" if self.policy else super().what()

    def where(self) -> str:
        return f"{self.node} ({self.scope()})" if self.scope() else self.node


def _dropped_by_form(value: Any) -> str | None:
    if isinstance(value, (dict, DroppedBy)):
        return FORM_TAG + "rule"
    return FORM_TAG + "name" if isinstance(value, str) else None


# A network policy's name (or default-deny), or any ruleset's rule or chain policy.
DroppedByAny = Annotated[
    Annotated[Annotated[str, Field(min_length=1)], Tag(FORM_TAG + "name")]
    | Annotated[DroppedBy, Tag(FORM_TAG + "rule")],
    Discriminator(
        _dropped_by_form,
        custom_error_type="dropped_by_form",
        custom_error_message=(
            "dropped_by is a network policy's name (or default-deny), or a rule or chain policy: "
            "{node, table, chain, rule | comment | handle | policy: true}"
        ),
    ),
]


class ProbeExpect(Base):
    result: Expect[Result] = Expect(("ok",))  # every probe's outcome
    # One node, a set (each probe served by one of them), or a distribution:
    # {pod3: 20%, pod4: 20%} = only these serve, each at least 20 % of the probes.
    served_by: ServedBy | None = None
    server_saw: Names | None = None
    icmp: Expect[str] | None = None  # words the ICMP error must contain, e.g. "port unreachable"
    icmp_from: Names | None = None  # who sent that ICMP error (a router: which hop)
    # What dropped the probes: a network policy of `cluster.policies` (one of its deny rules)
    # or `default-deny` (an isolated pod that no rule allowed); or {node, table, chain, rule |
    # comment | handle | policy: true}, a rule or chain policy of any node's ruleset
    dropped_by: DroppedByAny | None = None
    # Over `count` probes: every answered one's round trip (ms), and the share left unanswered
    # (%). With `loss:`, the probes that timed out count as lost, not as a wrong `result:`.
    rtt_ms: RttRange | None = None
    loss: LossRange | None = None


Ports = Expect[Port]


class ConntrackExpect(Base):
    entry: bool = True  # false: the flow must have *no* entry in this node
    orig_src: Names | None = None
    orig_dst: Names | None = None
    orig_sport: Ports | None = None
    orig_dport: Ports | None = None
    reply_src: Names | None = None
    reply_dst: Names | None = None
    reply_sport: Ports | None = None
    reply_dport: Ports | None = None
    dnat: bool | None = None
    snat: bool | None = None
    zone: Expect[Annotated[int, Field(ge=0, le=65535)]] | None = None
    mark: Expect[Mark] | None = None
    state: Expect[str] | None = None  # TCP state, e.g. ESTABLISHED, TIME_WAIT


class ConntrackSpec(Base):
    on: NodeName
    expect: ConntrackExpect = ConntrackExpect()


class IpvsExpect(Base):
    """The IPVS connection entry of the probe's own flow in a director (matched by the
    client's address and port), as `ipvsadm -Lnc` lists it."""

    entry: bool = True  # false: the flow must have *no* IPVS connection in this node
    # The real server it was given: a node (any of its addresses), an address, NODE:PORT,
    # ADDR:PORT or [V6]:PORT; a list means any of them.
    real: Names | None = None
    forward: Expect[Annotated[Literal["masq", "dr", "tun", "local"], BeforeValidator(normalize_forward)]] | None = None
    state: Expect[str] | None = None  # ESTABLISHED, TIME_WAIT, SYN_RECV, CLOSE, … (UDP: UDP)


class IpvsSpec(Base):
    on: NodeName
    expect: IpvsExpect = IpvsExpect()


class CaptureExpect(Base):
    seen: bool = True  # false: none of the probe's packets may cross this interface
    # The frame's own (outermost) IP header: what is on the wire.
    outer_src: Names | None = None
    outer_dst: Names | None = None
    # of the outer header; ipip: IPv4 or IPv6 inside an IP header (protocol 4 or 41)
    proto: Expect[Literal["tcp", "udp", "icmp", "icmpv6", "ipip"]] | None = None
    udp_dport: Ports | None = None  # of the outer header
    vxlan_vni: Expect[Annotated[int, Field(ge=0, le=16777215)]] | None = None
    # The innermost IP header (the probe's own flow, after any NAT on the way).
    src: Names | None = None
    dst: Names | None = None
    direction: Literal["in", "out"] | None = None


class CaptureSpec(Base):
    on: Where
    expect: CaptureExpect = CaptureExpect()


def _check_amount(value: Any) -> Any:
    """N (exactly N), or {min: N, max: M} (either may be left out)."""
    if isinstance(value, bool):
        raise ValueError(f"an amount is a number or {{min: N, max: M}}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a counter counts 0 or more, got {value}")
        return {"min": value, "max": value}
    return value


class Amount(Base):
    """How much a counter must count: from min to max (no max: at least min)."""

    min: Annotated[int, Field(ge=0)] = 0
    max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"min {self.min} is more than max {self.max}")
        return self

    def admits(self, n: int) -> bool:
        return self.min <= n and (self.max is None or n <= self.max)

    def words(self) -> str:
        """'exactly 4', 'at least 1', 'at most 10', '1 to 10'."""
        if self.max is None:
            return f"at least {self.min}"
        if self.max == self.min:
            return f"exactly {self.min}"
        return f"at most {self.max}" if self.min == 0 else f"{self.min} to {self.max}"


CounterAmount = Annotated[Amount, BeforeValidator(_check_amount)]
COUNTER_IDS = ("comment", "rule", "handle", "name")  # ways to name a counter: exactly one


class CounterSpec(FirewallRule):
    """A firewall counter of a node, and how much the probes must make it count: the
    difference between a reading before the probes and one after them."""

    on: NodeName
    name: Annotated[str, Field(min_length=1)] | None = None  # a named counter (`counter NAME { }`)
    packets: CounterAmount | None = None
    bytes: CounterAmount | None = None

    def what(self) -> str:
        """'the rule with comment "svc web"', 'named counter web-hits', … (where: see where())."""
        return f"named counter {self.name}" if self.name is not None else super().what()

    def where(self) -> str:
        """'router (ip filter forward)': the node and the part of its ruleset asked about."""
        return f"{self.on} ({self.scope()})" if self.scope() else self.on


class _CheckCommon(Base):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    wait: Annotated[float, Field(ge=0, le=600)] = 0  # retry until it passes, for up to this long


class ProbeCheck(_CheckCommon):
    probe: Probe
    expect: ProbeExpect = ProbeExpect()
    conntrack: ConntrackSpec | None = None
    ipvs: IpvsSpec | None = None
    capture: CaptureSpec | None = None
    # firewall counters and what the probes must add to them; such checks run one at a time
    counters: list[CounterSpec] = []


# ---------------------------------------------------------------- route / rule checks

RouteTypeSeen = Literal[
    "unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "none"
]


class RouteQuerySpec(Base):
    on: NodeName
    get: IpAddress
    from_: IpAddress | None = Field(default=None, alias="from")
    iif: IfName | None = None
    oif: IfName | None = None
    vrf: IfName | None = None  # a VRF device of the node: `ip route get vrf NAME` (the VRF as output device)
    fwmark: Mark | None = None
    ipproto: Literal["tcp", "udp", "icmp", "icmpv6"] | None = None
    sport: Port | None = None
    dport: Port | None = None
    dscp: Annotated[Dscp, Number] | None = None  # the packet's DSCP (TOS byte >> 2)
    tos: Annotated[Dsfield, Number] | None = None  # the whole DS field, ECN bits too (`ip route get … tos`)
    flowlabel: Annotated[FlowLabel, Number] | None = None  # IPv6 (RTA_FLOWLABEL, Linux 6.15+)
    uid: Annotated[int, Field(ge=0, lt=2**32)] | None = None  # the sending socket's owner


class RouteExpect(Base):
    """Each key is one value, a list (any of them) or {not: …} (netlab.lab.expect)."""

    type: Expect[RouteTypeSeen] | None = None  # "none": no route at all
    rule: Expect[Annotated[int, Field(ge=0, lt=2**32)]] | None = None  # priority of the rule that decided
    table: Expect[TableRef] | None = None
    dev: Expect[IfName] | None = None
    via: Expect[IpAddress] | None = None
    prefsrc: Expect[IpAddress] | None = None


class RouteCheck(_CheckCommon):
    route: RouteQuerySpec
    expect: RouteExpect


class RuleQuerySpec(Base):
    """Which rule to look for: every key given must match, the others are free."""

    on: NodeName
    priority: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    from_: Prefix | None = Field(default=None, alias="from")
    to: Prefix | None = None
    iif: IfName | None = None
    oif: IfName | None = None
    fwmark: Mark | None = None
    not_: bool | None = Field(default=None, alias="not")
    ipproto: Literal["tcp", "udp", "icmp", "icmpv6", "sctp"] | Annotated[int, Field(ge=1, le=255)] | None = None
    sport: PortRange | None = None
    dport: PortRange | None = None
    dscp: Annotated[Dscp, Number] | None = None
    tos: Annotated[Dsfield, Number] | None = None
    flowlabel: Annotated[FlowLabel, Number] | None = None
    uidrange: UidRange | None = None
    l3mdev: bool | None = None
    goto: Annotated[int, Field(ge=1, lt=2**32)] | None = None
    table: TableRef | None = None
    action: Literal["lookup", "blackhole", "unreachable", "prohibit", "goto", "nop"] | None = None
    family: Literal[4, 6] | None = None


class RuleExpect(Base):
    present: bool = True


class RuleCheck(_CheckCommon):
    rule: RuleQuerySpec
    expect: RuleExpect = RuleExpect()


CHECK_KINDS = ("probe", "route", "rule")


def _check_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [k for k in CHECK_KINDS if k in value]
        return kinds[0] if len(kinds) == 1 else None
    if isinstance(value, (ProbeCheck, RouteCheck, RuleCheck)):
        return {ProbeCheck: "probe", RouteCheck: "route", RuleCheck: "rule"}[type(value)]
    return None


Check = Annotated[
    Annotated[ProbeCheck, Tag("probe")] | Annotated[RouteCheck, Tag("route")] | Annotated[RuleCheck, Tag("rule")],
    Discriminator(
        _check_tag,
        custom_error_type="check_kind",
        custom_error_message="a check needs exactly one of probe:, route: or rule:",
    ),
]
CHECK_TAGS = frozenset(CHECK_KINDS)


# ---------------------------------------------------------------- node services


def _check_serve(value: Any) -> str:
    text = str(value).strip().lower()
    proto, sep, port = text.partition("/")
    if not sep or proto not in ("tcp", "udp", "http") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"a service is PROTO/PORT with PROTO tcp, udp or http and a port 1–65535, e.g. tcp/8080, got {value!r}"
        )
    return f"{proto}/{int(port)}"


ServeSpec = Annotated[str, BeforeValidator(_check_serve)]
