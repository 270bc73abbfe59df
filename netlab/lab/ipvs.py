"""IPVS in the lab file: a node's `ipvs:` virtual services and their real servers, as
`ipvsadm -A` / `ipvsadm -a` would make them, and the cross-rules the kernel would
otherwise enforce one errno at a time (or not at all: ipvsadm quietly rewrites some).

A service is matched by protocol, address and port (`ipvsadm -t/-u/--sctp-service
ADDR:PORT`) or by firewall mark (`-f MARK`, for IPv4 or IPv6 per `family:`). Each real
server gets connections by the service's scheduler and is reached by masquerading (NAT,
`-m`), direct routing (`-g`, ipvsadm's "route"/gatewaying) or IP-in-IP tunnelling (`-i`).

Pure: no kernel here (netlab.kernel.ipvs applies and reads them).
"""

import difflib
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from netlab.lab.source import Complaint, Path
from netlab.lab.values import Base, IpAddress
from netlab.vocabulary import host_port

# The schedulers of Linux's IPVS (ip_vs_<name> modules; net/netfilter/ipvs/Kconfig).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "fo", "ovf", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "twos")
# ipvsadm's words for the forwarding methods: -m masquerading, -g gatewaying (direct
# routing, "Route" in `ipvsadm -L`), -i ipip (tunnelling).
FORWARD_SYNONYMS = {
    "route": "dr",
    "gatewaying": "dr",
    "direct": "dr",
    "direct-routing": "dr",
    "droute": "dr",
    "nat": "masq",
    "masquerading": "masq",
    "masquerade": "masq",
    "ipip": "tun",
    "tunnel": "tun",
}
DEFAULT_PERSISTENCE = 300  # seconds: ipvsadm's `-p` without a value
# Long names (ipvsadm(8), the LVS documentation) → the scheduler's short one.
SCHEDULER_NAMES = {
    "round-robin": "rr",
    "roundrobin": "rr",
    "weighted-round-robin": "wrr",
    "least-connection": "lc",
    "weighted-least-connection": "wlc",
    "locality-based-least-connection": "lblc",
    "destination-hashing": "dh",
    "source-hashing": "sh",
    "shortest-expected-delay": "sed",
    "never-queue": "nq",
    "maglev": "mh",
    "maglev-hashing": "mh",
    "weighted-failover": "fo",
    "weighted-overflow": "ovf",
}

# /proc/sys/net/ipv4/vs/* (Documentation/networking/ipvs-sysctl.rst; the lblc/lblcr ones
# appear with their scheduler's module). They exist only once ip_vs is loaded, and only
# under net.ipv4 — for IPv6 services too.
IPVS_SYSCTLS = (
    "am_droprate",
    "amemthresh",
    "backup_only",
    "cache_bypass",
    "conn_reuse_mode",
    "conntrack",
    "debug_level",
    "drop_entry",
    "drop_packet",
    "est_cpulist",
    "est_nice",
    "expire_nodest_conn",
    "expire_quiescent_template",
    "ignore_tunneled",
    "lblc_expiration",
    "lblcr_expiration",
    "nat_icmp_send",
    "pmtu_disc",
    "run_estimation",
    "schedule_icmp",
    "secure_tcp",
    "sloppy_sctp",
    "sloppy_tcp",
    "snat_reroute",
    "sync_persist_mode",
    "sync_ports",
    "sync_qlen_max",
    "sync_refresh_period",
    "sync_retries",
    "sync_sock_size",
    "sync_threshold",
    "sync_version",
)


def normalize_forward(value: Any) -> Any:
    """ipvsadm's words too: route/gatewaying (dr), masquerading/nat (masq), ipip/tunnel (tun)."""
    if isinstance(value, str):
        return FORWARD_SYNONYMS.get(value.strip().lower(), value.strip().lower())
    return value


def _persistent(value: Any) -> Any:
    """`persistent: true` is ipvsadm's bare `-p` (300 s); false is none."""
    if value is True:
        return DEFAULT_PERSISTENCE
    if value is False:
        return None
    if isinstance(value, int) and not 1 <= value < 2**31:
        raise ValueError(
            f"persistence is a number of seconds from 1 (or `true`: ipvsadm's {DEFAULT_PERSISTENCE}), got {value!r}"
        )
    return value


def _number(what: str, low: int, high: int, *, text: bool = False) -> Any:
    """A whole number from low to high, with a message that says so (also for a bool,
    which pydantic would take as 0 or 1); with `text`, also written as '0x10'."""

    def check(value: Any) -> int:
        number = value
        if isinstance(value, str) and text:
            try:
                number = int(value.strip(), 0)
            except ValueError:
                extra = "; IPVS matches the whole mark, so there is no /MASK" if "/" in value else ""
                raise ValueError(
                    f"{what} is a number from {low} to {high} (decimal or 0x…), got {value!r}{extra}"
                ) from None
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"{what} is a whole number from {low} to {high}, got {value!r}")
        if not low <= number <= high:
            raise ValueError(f"{what} is from {low} to {high}, got {value!r}")
        return number

    return BeforeValidator(check)


def _netmask(value: Any) -> Any:
    """Persistence granularity: a prefix length (24, '/24') or an IPv4 netmask
    ('255.255.255.0'), kept as the prefix length."""
    if isinstance(value, bool):
        raise ValueError(f"a netmask is a prefix length like 24 or an IPv4 mask like 255.255.255.0, got {value!r}")
    if isinstance(value, str):
        text = value.strip().lstrip("/")
        if text.isdigit():
            return int(text)
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
        except ValueError:
            raise ValueError(
                f"{value!r} is not a netmask: give a prefix length like 24 (IPv6: 1 to 128) or a "
                "contiguous IPv4 mask like 255.255.255.0"
            ) from None
    return value


Port = Annotated[int, _number("a port", 1, 65535)]
Forward = Annotated[Literal["masq", "dr", "tun"], BeforeValidator(normalize_forward)]


class IpvsReal(Base):
    """A real server: `ipvsadm -a … -r ADDRESS[:PORT] -m|-g|-i -w WEIGHT`."""

    address: IpAddress
    port: Port | None = None  # default: the service's (masq may change it; dr and tun cannot)
    weight: Annotated[int, _number("a weight", 0, 65535)] = 1  # 0: quiesced, no new connections
    forward: Forward = "masq"


class IpvsService(Base):
    """A virtual service: `ipvsadm -A -t|-u|--sctp-service ADDR:PORT | -f MARK -s SCHED [-p S [-M MASK]]`."""

    proto: Literal["tcp", "udp", "sctp"] = "tcp"
    address: IpAddress | None = None
    port: Port | None = None
    fwmark: Annotated[int, _number("a firewall mark", 1, 2**32 - 1, text=True)] | None = None
    family: Literal[4, 6] | None = None  # of a fwmark service (default 4); an address says its own
    scheduler: str = "wlc"  # ipvsadm's default
    persistent: Annotated[int | None, BeforeValidator(_persistent)] = None  # seconds
    # persistence granularity; before validators run last-first: _netmask, then the range
    netmask: Annotated[int, _number("a netmask (prefix length)", 0, 128), BeforeValidator(_netmask)] | None = None
    reals: list[IpvsReal] = []


def service_family(svc: IpvsService) -> int:
    if svc.address is not None:
        return ipaddress.ip_address(svc.address).version
    return svc.family or 4


def real_port(svc: IpvsService, real: IpvsReal) -> int:
    """The port the kernel is given for a real server, as ipvsadm computes it: the real's
    own for masq (default: the service's); always the service's for dr and tun, which
    cannot change it. 0 (a fwmark service's): each packet's own destination port."""
    if real.forward != "masq" or real.port is None:
        return svc.port or 0
    return real.port


def service_text(svc: IpvsService) -> str:
    """'TCP 192.0.2.100:80', 'TCP [2001:db8::1]:80', 'FWM 1 IPv6' (ipvsadm -L's words)."""
    if svc.fwmark is not None:
        return f"FWM {svc.fwmark}" + (" IPv6" if service_family(svc) == 6 else "")
    return f"{svc.proto.upper()} {host_port(svc.address or '?', svc.port, no_port='bracketed')}"


def needs_ipvs(services: list[IpvsService], sysctls: Mapping[str, object]) -> bool:
    """Does a node need the kernel's IPVS: virtual services, or net.ipv4.vs.* sysctls
    (which exist only once ip_vs is loaded)?"""
    return bool(services) or any(k.replace("/", ".").startswith("net.ipv4.vs.") for k in sysctls)


def check_sysctl(key: str) -> str | None:
    """What is wrong with a net.ipv4.vs.* key (a name the kernel does not have), or None."""
    parts = key.split("/") if "/" in key else key.split(".")
    if len(parts) < 3 or parts[0] != "net" or parts[2] != "vs":
        return None
    if parts[1] != "ipv4":
        return (
            f"IPVS has its sysctls under net.ipv4.vs (for IPv6 services too); write "
            f"net.ipv4.vs.{'.'.join(parts[3:]) or 'conntrack'}"
        )
    name = ".".join(parts[3:])
    if name in IPVS_SYSCTLS:
        return None
    close = difflib.get_close_matches(name, IPVS_SYSCTLS, n=1, cutoff=0.6)
    hint = f"did you mean net.ipv4.vs.{close[0]}?" if close else f"IPVS has: {', '.join(IPVS_SYSCTLS)}"
    return f"{key!r} is not an IPVS sysctl; {hint}"


def check_node_ipvs(services: list[IpvsService], base: Path, local: set[str]) -> Iterator[Complaint]:
    """One node's `ipvs:`: each service identified once and fully, reals that the kernel
    takes (and that ipvsadm would not silently change). `local`: the node's addresses."""
    seen: dict[tuple[object, ...], int] = {}
    for i, svc in enumerate(services):
        path = (*base, "ipvs", i)
        yield from _check_service(svc, path, local)
        family = service_family(svc)
        # The kernel keys a fwmark service by family and mark only (the protocol is ignored).
        key = ("fwm", family, svc.fwmark) if svc.fwmark is not None else (svc.proto, svc.address, svc.port)
        if key in seen and (svc.fwmark is not None or svc.address is not None):
            yield (
                path,
                (
                    f"the same virtual service as ipvs[{seen[key]}] ({service_text(svc)}); the kernel "
                    "refuses a second one (EEXIST): merge their reals"
                ),
            )
        seen.setdefault(key, i)
        yield from _check_reals(svc, path)


def _check_service(svc: IpvsService, path: Path, local: set[str]) -> Iterator[Complaint]:
    given = svc.model_fields_set
    if svc.fwmark is not None:
        extra = [k for k in ("address", "port") if getattr(svc, k) is not None]
        if extra:
            yield (
                (*path, extra[0]),
                (
                    "a service is matched by `address:` and `port:` (ipvsadm -t ADDR:PORT) or by `fwmark:` "
                    f"(ipvsadm -f MARK), not both: drop {' and '.join(f'`{k}:`' for k in extra)}"
                ),
            )
        if "proto" in given:
            yield (
                (*path, "proto"),
                (
                    "a fwmark service takes every packet with its mark, whatever the protocol (the kernel "
                    "ignores it): drop `proto:`"
                ),
            )
    else:
        if svc.address is None and svc.port is None:
            yield (
                path,
                (
                    "a virtual service needs `address:` and `port:` (ipvsadm -t ADDR:PORT) or "
                    "`fwmark:` (ipvsadm -f MARK)"
                ),
            )
        elif svc.address is None:
            yield path, "a virtual service with `port:` needs `address:`, the virtual IP (or use `fwmark:`)"
        elif svc.port is None:
            yield (
                (*path, "address"),
                (
                    f"a virtual service needs `port:` too: the kernel matches {svc.proto.upper()} packets by address and "
                    "port (for every port of an address, mark them and use `fwmark:`)"
                ),
            )
        if svc.address is not None and svc.family is not None and svc.family != service_family(svc):
            yield (
                (*path, "family"),
                (
                    f"family {svc.family} contradicts address {svc.address}; `family:` is for fwmark services, "
                    "an address says its own"
                ),
            )
        unspecified = svc.address is not None and ipaddress.ip_address(svc.address).is_unspecified
        if svc.address is not None and svc.address not in local and not unspecified:
            yield (
                (*path, "address"),
                (
                    f"{svc.address} is not an address of this node; IPVS sees only packets delivered locally, so "
                    f"put the virtual IP on a link of the node (e.g. `lo: {{addresses: [{svc.address}/"
                    f"{32 if service_family(svc) == 4 else 128}]}}`, or a dummy like kube-ipvs0)"
                ),
            )
    if svc.scheduler not in SCHEDULERS:
        close = SCHEDULER_NAMES.get(svc.scheduler.lower()) or next(
            iter(difflib.get_close_matches(svc.scheduler, SCHEDULERS, n=1, cutoff=0.5)), None
        )
        hint = f"; did you mean {close!r}?" if close else ""
        yield (*path, "scheduler"), (f"unknown scheduler {svc.scheduler!r}{hint} (Linux has: {', '.join(SCHEDULERS)})")
    if svc.netmask is not None:
        if svc.persistent is None:
            yield (
                (*path, "netmask"),
                ("`netmask:` groups clients for persistence; it needs `persistent: SECONDS` (ipvsadm -M goes with -p)"),
            )
        family = service_family(svc)
        top = 32 if family == 4 else 128
        if not (1 if family == 6 else 0) <= svc.netmask <= top:
            yield (
                (*path, "netmask"),
                (
                    f"a persistence netmask of an IPv{family} service is a prefix length from "
                    f"{1 if family == 6 else 0} to {top}, got {svc.netmask}"
                ),
            )


def _check_reals(svc: IpvsService, path: Path) -> Iterator[Complaint]:
    family = service_family(svc)
    seen: dict[tuple[object, int], int] = {}
    for j, real in enumerate(svc.reals):
        rpath = (*path, "reals", j)
        version = ipaddress.ip_address(real.address).version
        if version != family and real.forward != "tun":
            why = " — a fwmark service is IPv4 unless it says `family: 6`" if svc.fwmark and not svc.family else ""
            yield (
                (*rpath, "address"),
                (
                    f"real server {real.address} is IPv{version}, but the service is IPv{family} "
                    f"({service_text(svc)}{why}); {real.forward} forwarding stays within one family (the kernel "
                    "refuses it: EINVAL); only `forward: tun` may cross families"
                ),
            )
        if real.forward != "masq" and real.port is not None and real.port != (svc.port or 0):
            to = f"the service's port {svc.port}" if svc.port else "each packet's own destination port"
            yield (
                (*rpath, "port"),
                (
                    f"{real.forward} forwarding does not rewrite the port: the real server gets {to} (ipvsadm "
                    f"ignores the port with {'-g' if real.forward == 'dr' else '-i'}); drop `port:`, or use "
                    "`forward: masq` to change it"
                ),
            )
        key = (ipaddress.ip_address(real.address), real_port(svc, real))
        if key in seen:
            where = host_port(real.address, key[1], no_port="bracketed")
            yield (
                (*rpath, "address"),
                (
                    f"real server {where} is already reals[{seen[key]}] of this service; the "
                    "kernel refuses a second one (EEXIST)"
                ),
            )
        seen.setdefault(key, j)
