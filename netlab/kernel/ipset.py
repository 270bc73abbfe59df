"""ipsets through netlink (nfnetlink's ipset subsystem): make a node's sets and their
members, what `ipset restore` does with the plan's lines.

Why netlink and not `ipset restore` in the namespace: a netlink socket belongs to the
network namespace of the thread that opens it, so the sets are made from the thread that
already stands in the namespace for the node's other firewall ops (nft.apply_in), and in
the preflight's throwaway namespace, which has no name `ip netns exec` could enter — the
iptables-nft-restore child that then loads the dumps inherits the namespace and finds
the sets. One batch per node, no process. The messages are pyroute2's (ipset_msg), built by
pure functions here and sent on nlsock.py's socket; pyroute2's IPSet would run an asyncio loop per socket
and wait for each answer (and it does work in a namespace: it is not the namespace that
rules it out).

Quirks this module absorbs:
- Creating a set needs the type's revision: the newest the kernel has is asked for
  first (IPSET_CMD_TYPE, which also makes the kernel load the type's module), as ipset does.
- Errors come back as ipset's own codes (4097 and up) where errno would be: the words
  are ipset's (lib/errcode.c), per command.
- Types that hold no address (bitmap:port, hash:mac) are of no family: NFPROTO_UNSPEC.
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import os
import socket
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_IPSET
from pyroute2.netlink.nfnetlink.ipset import (
    IPSET_CMD_ADD,
    IPSET_CMD_CREATE,
    IPSET_CMD_DESTROY,
    IPSET_CMD_TYPE,
    IPSET_FLAG_WITH_COMMENT,
    ipset_msg,
)

from netlab.kernel.nlsock import NetlinkSocket, Request
from netlab.lab.ipset import parse_element
from netlab.plan.ops import CreateIpset, Op

NETLINK_NETFILTER = 12
IPSET_PROTOCOL = 6  # the oldest protocol every kernel since 3.x takes (IPSET_PROTOCOL_MIN)
NFPROTO = {0: 0, 4: 2, 6: 10}  # NFPROTO_UNSPEC, NFPROTO_IPV4, NFPROTO_IPV6
_NO_FAMILY = ("bitmap:port", "hash:mac")

# ipset's words (lib/errcode.c) for its own error codes; the type-specific ones (4352+)
# mean one thing for hash types and another for bitmaps.
_GENERIC = {
    4097: "ipset protocol error",
    4098: "set type not supported",
    4099: "maximal number of sets reached, cannot create more",
    4104: "the value of the CIDR parameter of the IP address is invalid",
    4106: "protocol family not supported by the set type",
    4109: "an IPv4 address is expected, but not received",
    4110: "an IPv6 address is expected, but not received",
    4112: "comment cannot be used: set was created without comment support",
}
_HASH = {
    4352: "hash is full, cannot add more elements",
    4353: "null-valued element, cannot be stored",
    4354: "invalid protocol specified",
    4355: "protocol missing, but must be specified",
}
_BITMAP = {
    4352: "element is out of the range of the set",
    4353: "the range you specified exceeds the size limit of the set type",
}


def _msg(attrs: list[tuple[str, Any]]) -> Any:
    msg = ipset_msg()
    msg["nfgen_family"] = socket.AF_INET  # what ipset sends; the set's family is an attribute
    msg["version"] = 0
    msg["res_id"] = 0
    msg["attrs"] = [("IPSET_ATTR_PROTOCOL", IPSET_PROTOCOL), *attrs]
    return msg


def _family(op: CreateIpset) -> int:
    return NFPROTO[0 if op.type in _NO_FAMILY else (4 if op.type == "bitmap:ip" else op.family)]


def _ip(address: str) -> dict[str, Any]:
    key = "IPSET_ATTR_IPADDR_IPV4" if ipaddress.ip_address(address).version == 4 else "IPSET_ATTR_IPADDR_IPV6"
    return {"attrs": [(key, address)]}


def create_message(op: CreateIpset, revision: int) -> Any:
    """IPSET_CMD_CREATE with the options `ipset create` would send."""
    data: list[tuple[str, Any]] = []
    if op.range is not None:
        low, _, high = op.range.partition("-")
        if op.type == "bitmap:port":
            data += [("IPSET_ATTR_PORT_FROM", int(low)), ("IPSET_ATTR_PORT_TO", int(high))]
        else:
            data += [("IPSET_ATTR_IP_FROM", _ip(low)), ("IPSET_ATTR_IP_TO", _ip(high))]
    if op.hashsize is not None:
        data.append(("IPSET_ATTR_HASHSIZE", op.hashsize))
    if op.maxelem is not None:
        data.append(("IPSET_ATTR_MAXELEM", op.maxelem))
    if op.comment:
        data.append(("IPSET_ATTR_CADT_FLAGS", IPSET_FLAG_WITH_COMMENT))
    return _msg(
        [
            ("IPSET_ATTR_SETNAME", op.name),
            ("IPSET_ATTR_TYPENAME", op.type),
            ("IPSET_ATTR_REVISION", revision),
            ("IPSET_ATTR_FAMILY", _family(op)),
            ("IPSET_ATTR_DATA", {"attrs": data}),
        ]
    )


def add_message(op: CreateIpset, member: str, comment: str | None) -> Any:
    """IPSET_CMD_ADD of one member: its parts as the type's attributes (the second
    address of a three-part type is IP2/CIDR2)."""
    element = parse_element(op.type, op.family, member)
    data: list[tuple[str, Any]] = []
    seen_address = False
    for kind, value in element.parts:
        if kind in ("ip", "net"):
            address, plen = (value, None) if kind == "ip" else value
            ip, cidr = ("IPSET_ATTR_IP2", "IPSET_ATTR_CIDR2") if seen_address else ("IPSET_ATTR_IP", "IPSET_ATTR_CIDR")
            data.append((ip, _ip(address)))
            if plen is not None:
                data.append((cidr, plen))
            seen_address = True
        elif kind == "port":
            if op.type == "bitmap:port":
                data.append(("IPSET_ATTR_PORT", value))
            else:
                proto, port = value
                data += [("IPSET_ATTR_PORT", port), ("IPSET_ATTR_PROTO", socket.getprotobyname(proto))]
        elif kind == "mark":
            data.append(("IPSET_ATTR_MARK", value))
        elif kind == "mac":
            data.append(("IPSET_ATTR_ETHER", value))
        elif kind == "iface":
            data.append(("IPSET_ATTR_IFACE", value))
    if comment is not None:
        data.append(("IPSET_ATTR_COMMENT", comment))
    return _msg([("IPSET_ATTR_SETNAME", op.name), ("IPSET_ATTR_DATA", {"attrs": data})])


def _mtype(cmd: int) -> int:
    return int(NFNL_SUBSYS_IPSET << 8) | cmd


def requests(op: CreateIpset, revision: int) -> list[Request]:
    """The set's create (of the type's `revision`, which the kernel offers), then one add
    per member, as `ipset restore` sends them. ValueError for a member the type refuses."""
    comments = op.comments or (None,) * len(op.members)
    adds = [
        Request(add_message(op, m, c), _mtype(IPSET_CMD_ADD), NLM_F_EXCL)
        for m, c in zip(op.members, comments, strict=True)
    ]
    return [Request(create_message(op, revision), _mtype(IPSET_CMD_CREATE), NLM_F_CREATE | NLM_F_EXCL), *adds]


def _revision(sock: NetlinkSocket, op: CreateIpset) -> int:
    """The newest revision of the op's type this kernel has (loading its module)."""
    msg = _msg([("IPSET_ATTR_TYPENAME", op.type), ("IPSET_ATTR_FAMILY", _family(op))])
    (answer,) = sock.query([(msg, _mtype(IPSET_CMD_TYPE), 0)])
    if not isinstance(answer, bytes):
        module = "ip_set_" + op.type.replace(":", "_").replace(",", "")
        if answer.errno == errnos.EAFNOSUPPORT:
            raise OSError(answer.errno, f"ipset type {op.type} does not take IPv{op.family} (EAFNOSUPPORT)")
        raise OSError(
            answer.errno, f"this kernel has no ipset type {op.type} (module {module}): {_words(answer.errno)}"
        )
    reply = ipset_msg(answer)
    reply.decode()
    return int(reply.get_attr("IPSET_ATTR_REVISION"))


def _words(code: int, op: CreateIpset | None = None, add: bool = False) -> str:
    """ipset's words for an errno or one of its own codes, for this command."""
    if code == errnos.EEXIST:
        return "a set of this name already exists" if not add else "the element is already in the set"
    if code == 4103:  # IPSET_ERR_EXIST
        return "the element is already in the set"
    if code >= 4352 and op is not None:
        words = (_BITMAP if op.type.startswith("bitmap:") else _HASH).get(code)
        if words:
            return words
    if code in _GENERIC:
        return _GENERIC[code]
    name = errnos.errorcode.get(code)
    return f"{os.strerror(code)} ({name})" if name else f"ipset error {code}"


def destroy_here(name: str) -> str | None:
    """`ipset destroy NAME` in the calling thread's namespace; why not, or None (also when
    there is no such set: it is gone, as asked)."""
    sock = NetlinkSocket(NETLINK_NETFILTER)
    try:
        msg = _msg([("IPSET_ATTR_SETNAME", name)])
        failures = sock.request([Request(msg, _mtype(IPSET_CMD_DESTROY))])
    finally:
        sock.close()
    bad = [f for f in failures if f.errno != errnos.ENOENT]
    return f"ipset destroy {name}: {_words(bad[0].errno)}" if bad else None


def apply_here(ops: Sequence[Op]) -> list[tuple[Op, str]]:
    """Make the sets of `ops` in the calling thread's namespace, each with its members, in
    one batch; (op, reason) for each set the kernel refused (or refused a member of)."""
    failed: list[tuple[Op, str]] = []
    try:
        sock = NetlinkSocket(NETLINK_NETFILTER)
    except OSError as err:
        return [(op, f"cannot open an nfnetlink socket: {err.strerror or err}") for op in ops]
    try:
        msgs: list[Request] = []
        owner: list[tuple[CreateIpset, str | None]] = []  # per message: its set, and the member it adds
        revisions: dict[tuple[str, int], int] = {}
        for op in ops:
            if not isinstance(op, CreateIpset):
                raise TypeError(f"not an ipset op: {type(op).__name__}")
            key = (op.type, _family(op))
            try:
                if key not in revisions:
                    revisions[key] = _revision(sock, op)
                msgs += requests(op, revisions[key])
            except (OSError, ValueError) as err:  # ValueError: a member the lab's checks would have refused
                failed.append((op, str(err.strerror if isinstance(err, OSError) else err)))
                continue
            owner += [(op, None), *((op, m) for m in op.members)]
        refused: dict[int, str] = {}
        for f in sock.request(msgs):
            op, member = owner[f.index]
            if id(op) in refused:
                continue  # its set's first refusal says it (the adds of a refused create fail too)
            words = _words(f.errno, op, add=member is not None)
            refused[id(op)] = f"{'ipset create' if member is None else f'ipset add {member}'}: {words}"
        failed += [(op, refused[id(op)]) for op in ops if id(op) in refused]
    finally:
        sock.close()
    order = {id(op): i for i, op in enumerate(ops)}
    return sorted(failed, key=lambda f: order[id(f[0])])
