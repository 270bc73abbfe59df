"""IPVS through generic netlink: make a lab's virtual services and real servers (what
`ipvsadm -A` / `ipvsadm -a` do), and read them back with their connection counts, and
the connection table (`ipvsadm -Lnc`).

A generic netlink socket belongs to the network namespace it was opened in, like an
rtnetlink one, so everything here runs in a thread that has entered the lab namespace
(the driver's worker, or netlab.kernel.inside.in_namespace). Messages are pyroute2's (ipvsmsg),
built by pure functions here and sent batched on nlsock.py's socket: pyroute2's IPVS
socket would run an asyncio loop per socket. The "IPVS" family id is looked up per socket (the lookup also
makes the kernel load ip_vs).

Quirks this module absorbs:
- A service is identified by family + protocol + address + port, or family + fwmark;
  creating one needs the scheduler, flags, timeout and netmask attributes too (the kernel
  answers EINVAL without them), a real server its forwarding method, weight and both
  thresholds.
- IPVS_SVC_ATTR_NETMASK is an IPv4 netmask for an IPv4 service, but a prefix length (a
  host-order u32) for an IPv6 one; pyroute2 types it as an IPv4 address either way.
- The kernel gives IPVS errors as a bare errno (no extended ACK message): the words are
  ipvsadm's (libipvs ipvs_strerror) for the same errno.
- The connection table has no netlink dump: it is /proc/net/ip_vs_conn of the reading
  *thread* (/proc/thread-self/net; /proc/self/net is the main thread's namespace).
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import socket
import struct
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink.generic.ipvs import (
    IPVS_CMD_DEL_DEST,
    IPVS_CMD_DEL_SERVICE,
    IPVS_CMD_GET_DEST,
    IPVS_CMD_GET_SERVICE,
    IPVS_CMD_NEW_DEST,
    IPVS_CMD_NEW_SERVICE,
    ipvsmsg,
)

from netlab.kernel.inside import in_namespace
from netlab.kernel.nlsock import NetlinkSocket, Request
from netlab.observations import IpvsConn, IpvsRealView, IpvsServiceView, IpvsState
from netlab.plan.ops import AddIpvsReal, AddIpvsService, Op
from netlab.plan.removal import GONE_ALREADY, Remove
from netlab.vocabulary import IP_PROTOS, proto_name

NETLINK_GENERIC = 16
GENL_VERSION = 1
IP_VS_SVC_F_PERSISTENT = 0x0001
# IP_VS_CONN_F_FWD_MASK values (uapi ip_vs.h): what a real server's connections get.
FORWARD_METHODS = {"masq": 0, "local": 1, "tun": 2, "dr": 3, "bypass": 4}
FORWARD_NAMES = {v: k for k, v in FORWARD_METHODS.items()}
CONN_TABLE = "/proc/thread-self/net/ip_vs_conn"


class IpvsUnavailable(OSError):
    """The kernel has no IPVS (the generic netlink family is not registered)."""


# --------------------------------------------------------------------------- socket


class _Genl:
    """A batching generic netlink socket, opened in the calling thread's namespace, with
    the IPVS family resolved."""

    def __init__(self) -> None:
        self.sock = NetlinkSocket(NETLINK_GENERIC)
        try:
            self.family = self._resolve("IPVS")
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> _Genl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _resolve(self, name: str) -> int:
        try:
            return self.sock.generic_family(name)
        except OSError as err:
            if err.errno == errnos.ENOENT:
                raise IpvsUnavailable(
                    errnos.ENOENT,
                    'this kernel has no IPVS (no generic netlink family "IPVS": '
                    "ip_vs is not built or cannot be loaded)",
                ) from None
            raise OSError(err.errno, f"resolving the generic netlink family IPVS: {err.strerror}") from None

    def dump(self, msg: Any) -> list[Any]:
        return self.sock.dump(msg, self.family, parse=_decode)


def _decode(data: bytes) -> Any:
    reply = ipvsmsg(data)
    reply.decode()
    return reply


def _msg(cmd: int, attrs: list[tuple[str, Any]]) -> Any:
    msg = ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = GENL_VERSION
    msg["attrs"] = attrs
    return msg


def _v6_netmask(plen: int) -> str:
    """An IPv6 service's netmask attribute is its prefix length as a host-order u32;
    pyroute2 encodes the attribute as an IPv4 address (network order bytes)."""
    return socket.inet_ntoa(struct.pack("=I", plen))


def _service_key(op: AddIpvsService | AddIpvsReal) -> list[tuple[str, Any]]:
    af = socket.AF_INET if op.family == 4 else socket.AF_INET6
    attrs: list[tuple[str, Any]] = [("IPVS_SVC_ATTR_AF", af)]
    if op.fwmark is not None:
        attrs.append(("IPVS_SVC_ATTR_FWMARK", op.fwmark))
    else:
        attrs += [
            ("IPVS_SVC_ATTR_PROTOCOL", IP_PROTOS[op.proto]),
            ("IPVS_SVC_ATTR_ADDR", op.address),
            ("IPVS_SVC_ATTR_PORT", op.port),
        ]
    return attrs


def service_message(op: AddIpvsService) -> Any:
    """IPVS_CMD_NEW_SERVICE, with every attribute ipvsadm sends."""
    attrs = _service_key(op)
    full = 32 if op.family == 4 else 128
    plen = op.netmask if op.netmask is not None else full
    netmask = str(ipaddress.IPv4Network(f"0.0.0.0/{plen}").netmask) if op.family == 4 else _v6_netmask(plen)
    attrs += [
        ("IPVS_SVC_ATTR_SCHED_NAME", op.scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": IP_VS_SVC_F_PERSISTENT if op.persistent else 0, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", op.persistent or 0),
        ("IPVS_SVC_ATTR_NETMASK", netmask),
    ]
    return _msg(IPVS_CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": attrs})])


def real_message(op: AddIpvsReal) -> Any:
    """IPVS_CMD_NEW_DEST: the service's key, then the real server."""
    af = socket.AF_INET if ipaddress.ip_address(op.real).version == 4 else socket.AF_INET6
    dest: list[tuple[str, Any]] = [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", af),  # first: pyroute2 encodes ADDR by it
        ("IPVS_DEST_ATTR_ADDR", op.real),
        ("IPVS_DEST_ATTR_PORT", op.real_port),
        ("IPVS_DEST_ATTR_FWD_METHOD", FORWARD_METHODS[op.forward]),
        ("IPVS_DEST_ATTR_WEIGHT", op.weight),
        ("IPVS_DEST_ATTR_U_THRESH", 0),
        ("IPVS_DEST_ATTR_L_THRESH", 0),
    ]
    return _msg(
        IPVS_CMD_NEW_DEST,
        [("IPVS_CMD_ATTR_SERVICE", {"attrs": _service_key(op)}), ("IPVS_CMD_ATTR_DEST", {"attrs": dest})],
    )


def request(op: Op, family: int) -> Request:
    """The IPVS request that makes op; `family` is the IPVS generic netlink family's
    message type (the kernel assigns it: NetlinkSocket.generic_family)."""
    if isinstance(op, AddIpvsService):
        return Request(service_message(op), family)
    if isinstance(op, AddIpvsReal):
        return Request(real_message(op), family)
    if isinstance(op, Remove) and isinstance(op.op, (AddIpvsService, AddIpvsReal)):
        # `ipvsadm -D` / `-d`: the add's message under the delete command (found by its key)
        msg = service_message(op.op) if isinstance(op.op, AddIpvsService) else real_message(op.op)
        msg["cmd"] = IPVS_CMD_DEL_SERVICE if isinstance(op.op, AddIpvsService) else IPVS_CMD_DEL_DEST
        return Request(msg, family)
    raise TypeError(f"not an IPVS op: {type(op).__name__}")


def _explain(op: Op, code: int, words: str) -> str:
    """The kernel's errno, and what it means for this request (ipvsadm's words)."""
    service = isinstance(op, AddIpvsService)
    meaning = {
        errnos.EEXIST: "the service already exists" if service else "this real server is already in the service",
        errnos.ENOENT: (
            f"no scheduler {getattr(op, 'scheduler', '?')!r} (module ip_vs_{getattr(op, 'scheduler', '?')})"
            if service
            else "no such service"
        ),
        errnos.ESRCH: "no such service (was its `ipvsadm -A` refused?)",
        errnos.EAFNOSUPPORT: "address family not supported by IPVS here",
        errnos.EINVAL: (
            "invalid service"
            if service
            else "invalid real server (of another family than the service, only tun forwarding may be)"
        ),
        errnos.ERANGE: "weight out of range",
    }.get(code)
    return f"{words}: {meaning}" if meaning else words


def apply_here(ops: Sequence[Op]) -> list[tuple[Op, str]]:
    """Make the services and real servers in the calling thread's namespace, in order
    (each real after its service), in one batch; (op, reason) for each one refused."""
    try:
        genl = _Genl()
    except OSError as err:
        reason = err.strerror or str(err)
        return [(op, reason) for op in ops]
    with genl:
        failures = genl.sock.request([request(op, genl.family) for op in ops])
        failures = [f for f in failures if not (isinstance(ops[f.index], Remove) and f.errno in GONE_ALREADY)]
        return [(ops[f.index], _explain(ops[f.index], f.errno, f.message)) for f in failures]


# --------------------------------------------------------------------------- reading


def _attrs(nla: Any) -> dict[str, Any]:
    return {name: value for name, value in nla["attrs"]}


def _addr(value: Any, family: int) -> str:
    """pyroute2 decodes an IPVS address by the family attribute; normalise it."""
    return str(ipaddress.ip_address(value)) if value else ("0.0.0.0" if family == 4 else "::")


def _parse_service(msg: Any) -> IpvsServiceView:
    a = _attrs(msg.get_attr("IPVS_CMD_ATTR_SERVICE"))
    family = 4 if a.get("IPVS_SVC_ATTR_AF") == socket.AF_INET else 6
    fwmark = a.get("IPVS_SVC_ATTR_FWMARK") or None
    flags = (a.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
    raw_mask = a.get("IPVS_SVC_ATTR_NETMASK") or ("255.255.255.255" if family == 4 else _v6_netmask(128))
    if family == 4:
        netmask = ipaddress.IPv4Network(f"0.0.0.0/{raw_mask}").prefixlen
    else:
        (netmask,) = struct.unpack("=I", socket.inet_aton(raw_mask))
    proto = a.get("IPVS_SVC_ATTR_PROTOCOL")  # absent for a fwmark service
    return IpvsServiceView(
        proto="" if proto is None else proto_name(proto),
        family=family,
        address=None if fwmark else _addr(a.get("IPVS_SVC_ATTR_ADDR"), family),
        port=int(a.get("IPVS_SVC_ATTR_PORT") or 0),
        fwmark=fwmark,
        scheduler=str(a.get("IPVS_SVC_ATTR_SCHED_NAME") or ""),
        persistent=int(a.get("IPVS_SVC_ATTR_TIMEOUT") or 0) if flags & IP_VS_SVC_F_PERSISTENT else None,
        netmask=netmask,
    )


def _parse_real(msg: Any, svc_family: int) -> IpvsRealView:
    a = _attrs(msg.get_attr("IPVS_CMD_ATTR_DEST"))
    af = a.get("IPVS_DEST_ATTR_ADDR_FAMILY")
    family = svc_family if af is None else (4 if af == socket.AF_INET else 6)
    method = int(a.get("IPVS_DEST_ATTR_FWD_METHOD") or 0)
    return IpvsRealView(
        address=_addr(a.get("IPVS_DEST_ATTR_ADDR"), family),
        port=int(a.get("IPVS_DEST_ATTR_PORT") or 0),
        forward=FORWARD_NAMES.get(method, str(method)),
        weight=int(a.get("IPVS_DEST_ATTR_WEIGHT") or 0),
        active=int(a.get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0),
        inactive=int(a.get("IPVS_DEST_ATTR_INACT_CONNS") or 0),
        persistent=int(a.get("IPVS_DEST_ATTR_PERSIST_CONNS") or 0),
    )


def services_here(*, missing_ok: bool = True) -> list[IpvsServiceView]:
    """Every virtual service of the calling thread's namespace, with its real servers, in
    the kernel's order; empty on a kernel without IPVS (IpvsUnavailable unless missing_ok)."""
    try:
        genl = _Genl()
    except IpvsUnavailable:
        if not missing_ok:
            raise
        return []
    with genl:
        out = []
        for msg in genl.dump(_msg(IPVS_CMD_GET_SERVICE, [])):
            svc = _parse_service(msg)
            key = {"IPVS_SVC_ATTR_AF": socket.AF_INET if svc.family == 4 else socket.AF_INET6}
            attrs = [
                (k, v)
                for k, v in _attrs(msg.get_attr("IPVS_CMD_ATTR_SERVICE")).items()
                if k in ("IPVS_SVC_ATTR_PROTOCOL", "IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_PORT", "IPVS_SVC_ATTR_FWMARK")
            ]
            request = _msg(IPVS_CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", {"attrs": [*key.items(), *attrs]})])
            # The kernel lists a service's reals newest first; ipvsadm sorts them (and the services).
            reals = sorted(
                (_parse_real(m, svc.family) for m in genl.dump(request)),
                key=lambda r: (ipaddress.ip_address(r.address).packed, r.port),
            )
            out.append(IpvsServiceView(**{**svc.__dict__, "reals": tuple(reals)}))
        return sorted(out, key=_service_order)


def _service_order(s: IpvsServiceView) -> tuple[int, int, int, bytes, int]:
    """ipvsadm's order (libipvs ipvs_cmp_services): address services before fwmark ones,
    then by protocol, address, port."""
    addr = ipaddress.ip_address(s.address).packed if s.address else b""
    return (s.fwmark or 0, s.family, IP_PROTOS.get(s.proto, 0), addr, s.port)


def parse_conn_table(text: str) -> list[IpvsConn]:
    """/proc/net/ip_vs_conn: 'Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires PEName PEData';
    IPv4 addresses and every port in hex, IPv6 addresses in full."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 9:
            continue
        try:
            out.append(
                IpvsConn(
                    proto=f[0].lower(),
                    client=_conn_addr(f[1]),
                    cport=int(f[2], 16),
                    vaddr=_conn_addr(f[3]),
                    vport=int(f[4], 16),
                    daddr=_conn_addr(f[5]),
                    dport=int(f[6], 16),
                    state=f[7],
                    expires=int(f[8]),
                )
            )
        except ValueError:
            continue  # a line of a format this does not know: skip it, never guess
    return out


def _conn_addr(text: str) -> str:
    if ":" in text:
        return str(ipaddress.IPv6Address(text))
    return str(ipaddress.IPv4Address(int(text, 16)))


def connections_here() -> list[IpvsConn]:
    """The IPVS connection table of the calling thread's namespace (empty without IPVS)."""
    try:
        with open(CONN_TABLE) as f:
            return parse_conn_table(f.read())
    except FileNotFoundError:
        return []


def ipvs_services(ns: str) -> list[IpvsServiceView]:
    """The virtual services of lab namespace ns, with their reals and connection counts."""
    return in_namespace(ns, services_here)


def ipvs_connections(ns: str) -> list[IpvsConn]:
    """The IPVS connections of lab namespace ns (persistence templates included)."""
    return in_namespace(ns, connections_here)


def ipvs_state(ns: str) -> IpvsState:
    services, conns = ipvs_view(ns)
    return IpvsState(tuple(services), tuple(conns))


def ipvs_view(ns: str) -> tuple[list[IpvsServiceView], list[IpvsConn]]:
    """Services and connections of ns, read in one visit (connections first: reading the
    services cannot change them)."""

    def both() -> tuple[list[IpvsServiceView], list[IpvsConn]]:
        conns = connections_here()
        return services_here(), conns

    return in_namespace(ns, both)
