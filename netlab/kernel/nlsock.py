"""The one netlink socket layer: rtnetlink (links, addresses, routes, rules,
neighbours), generic netlink (IPVS) and nfnetlink (ipsets, conntrack) all go through
`NetlinkSocket`. pyroute2's message classes give the wire format (kernel/encode.py
and the per-family modules build them); this module only sends and reads.

Three ways to talk, all batching: `request` (many messages per `send()`, ACKs read
afterwards and matched by sequence number: what makes `up` fast), `query` (many
requests that each get one answer, e.g. route get), and `dump` (one request, every
reply until NLMSG_DONE).

Why not pyroute2's IPRoute/IPVS/IPSet/NFCTSocket: they run an asyncio loop and wait
for one reply per call, and opening one in a namespace forks a child. Batching is what
makes hundreds of namespaces cheap: the kernel handles every message of a buffer in one
system call. A netlink socket belongs to the namespace of the thread that opened it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from netlab.kernel.netns import high_fd

NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLM_F_DUMP = 0x300
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
RTM_GETLINK = 18
IFLA_IFNAME = 3
IFLA_IFALIAS = 20

_HDR = struct.Struct("=IHHII")
BATCH = 200  # messages per send(): keeps the ACKs well inside the receive buffer
# Queries per send(): each answer holds a few KiB of the receive buffer until it is read,
# so 32 fit even in the default 208 KiB one (when SO_RCVBUFFORCE was refused).
QUERY_BATCH = 32
# The kernel answers a netlink request at once, even under load (within milliseconds,
# seconds behind the rtnl lock of thousands of namespaces): an answer not there after
# this long was lost (a request whose ACK another reader took), and the command ends
# with that said instead of waiting forever.
ANSWER_TIMEOUT = 120


class Request(NamedTuple):
    """One message to send: its body after the nlmsghdr as bytes, or a pyroute2 message
    object (header left to the socket); its netlink message type and its flags
    (NLM_F_REQUEST and NLM_F_ACK are added)."""

    msg: Any
    type: int
    flags: int = 0


@dataclass(frozen=True)
class Failure:
    index: int  # position in the batch
    errno: int
    message: str  # strerror, plus the kernel's own explanation (extack) when it gives one

    def __str__(self) -> str:
        return self.message


def decode_rtnl(data: bytes) -> Any:
    """One rtnetlink message's bytes → its decoded pyroute2 message (ifinfmsg, rtmsg, …)."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl  # only readers decode: `down` starts without pyroute2

    return next(iter(MarshalRtnl().parse(data)))


class NetlinkSocket:
    """A netlink socket of one protocol (NETLINK_ROUTE by default; NETLINK_GENERIC,
    NETLINK_NETFILTER), bound to the namespace of the thread that created it."""

    def __init__(self, protocol: int = socket.NETLINK_ROUTE) -> None:
        made = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        # kept above 1023 for libnftables' select() (see netns.HIGH_FDS)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol, fileno=high_fd(made.detach()))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:  # not root: the ordinary limits will do for small labs
            pass
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", ANSWER_TIMEOUT, 0))
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _frame(self, msg: Any, mtype: int, flags: int) -> tuple[int, bytes]:
        """msg framed with a fresh sequence number: (seq, bytes)."""
        seq = self._next_seq()
        return seq, frame(msg, mtype, flags, seq)

    def request(self, msgs: Sequence[Request | tuple[Any, int, int]]) -> list[Failure]:
        """Send (message, type, flags) requests with ACKs; return the ones that failed."""
        failures: list[Failure] = []
        for start in range(0, len(msgs), BATCH):
            chunk = msgs[start : start + BATCH]
            seqs: dict[int, int] = {}
            buf = bytearray()
            for i, (msg, mtype, flags) in enumerate(chunk):
                seq, data = self._frame(msg, mtype, flags | NLM_F_REQUEST | NLM_F_ACK)
                seqs[seq] = start + i
                buf += data
            self.sock.sendall(bytes(buf))
            failures += self._collect_acks(seqs)
        return failures

    def _collect_acks(self, pending: dict[int, int]) -> list[Failure]:
        failures: list[Failure] = []
        while pending:
            data = receive(self.sock, 1 << 20, len(pending))
            for offset, length, mtype, flags, seq in _frames(data):
                if mtype == NLMSG_ERROR and seq in pending:
                    index = pending.pop(seq)
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code != 0:
                        failures.append(Failure(index, -code, _error_text(-code, data, offset, length, flags)))
        return failures

    def send_framed(self, data: bytes, seqs: Sequence[int]) -> dict[int, int]:
        """Send messages framed already (`frame`, e.g. an nfnetlink batch); each of `seqs`'s
        answer: 0 for its ACK, else the errno."""
        self.sock.sendall(data)
        found: dict[int, int] = {}
        while len(found) < len(seqs):
            data = receive(self.sock, 1 << 16, len(seqs) - len(found))
            for offset, _, mtype, _, seq in _frames(data):
                if mtype == NLMSG_ERROR and seq in seqs:
                    found[seq] = -struct.unpack_from("=i", data, offset + 16)[0]
        return found

    def link_indexes(self) -> dict[str, int]:
        """Interface name → ifindex of every link, parsing only those two fields: decoding
        whole link messages with pyroute2 costs ~1 ms per namespace, this a few µs."""
        seq = self._next_seq()
        # RTM_GETLINK dump: nlmsghdr + struct ifinfomsg (16 bytes, all zero)
        self.sock.sendall(_HDR.pack(_HDR.size + 16, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + bytes(16))
        out: dict[str, int] = {}
        for data, offset, length in replies(self.sock, seq):
            (index,) = struct.unpack_from("=i", data, offset + 20)
            for atype, value in _attrs(data, offset + 32, offset + length):
                if atype == IFLA_IFNAME:
                    out[value.split(b"\0", 1)[0].decode()] = index
                    break
        return out

    def link_alias(self, index: int) -> str | None:
        """The alias of link `index` (None without one), asking for that link alone and
        parsing only its IFLA_IFALIAS: a decoded dump of every link costs ~1 ms per
        namespace, which adds up over the machine's namespaces. OSError if there is none."""
        seq = self._next_seq()
        ifinfomsg = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
        self.sock.sendall(_HDR.pack(_HDR.size + len(ifinfomsg), RTM_GETLINK, NLM_F_REQUEST, seq, 0) + ifinfomsg)
        for data, offset, length in replies(self.sock, seq, dump=False):
            for atype, value in _attrs(data, offset + 32, offset + length):
                if atype == IFLA_IFALIAS:
                    return value.split(b"\0", 1)[0].decode(errors="replace")
        return None

    def dump(
        self, msg: Any, mtype: int, parse: Callable[[bytes], Any] = decode_rtnl, *, bufsize: int = 1 << 20
    ) -> list[Any]:
        """A dump request (e.g. RTM_GETLINK, IPVS_CMD_GET_SERVICE under the IPVS family's
        type); every reply, each one message's bytes through `parse` (by default decoded
        as rtnetlink; `bytes` keeps them raw). An NLMSG_ERROR answer raises OSError with
        the kernel's words. `bufsize`: bytes per recv() (a smaller one is cheaper to
        allocate for dumps of many small messages)."""
        seq, data = self._frame(msg, mtype, NLM_F_REQUEST | NLM_F_DUMP)
        self.sock.sendall(data)
        return [
            parse(data[offset : offset + length]) for data, offset, length in replies(self.sock, seq, bufsize=bufsize)
        ]

    def query(self, msgs: Sequence[Request | tuple[Any, int, int]]) -> list[bytes | Failure]:
        """Send (message, type, flags) requests that each get exactly one answer (e.g.
        RTM_GETROUTE), many per send(); return, in request order, each answer's bytes
        (one netlink message) or the Failure the kernel answered with instead."""
        answers: list[bytes | Failure] = []
        for start in range(0, len(msgs), QUERY_BATCH):
            chunk = msgs[start : start + QUERY_BATCH]
            pending: dict[int, int] = {}
            got: dict[int, bytes | Failure] = {}
            buf = bytearray()
            for i, (msg, mtype, flags) in enumerate(chunk):
                seq, data = self._frame(msg, mtype, flags | NLM_F_REQUEST)  # no ACK: the answer is the reply
                pending[seq] = start + i
                buf += data
            self.sock.sendall(bytes(buf))
            while pending:
                data = receive(self.sock, 1 << 20, len(pending))
                for offset, length, mtype, flags, seq in _frames(data):
                    index = pending.pop(seq, None)
                    if index is None:
                        continue
                    if mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + 16)
                        text = _error_text(-code, data, offset, length, flags) if code else "acknowledged, no answer"
                        got[index] = Failure(index, -code, text)
                    else:
                        got[index] = data[offset : offset + length]
            answers += [got[start + i] for i in range(len(chunk))]
        return answers

    def generic_family(self, name: str) -> int:
        """The message type of generic netlink family `name` (e.g. "IPVS"; asking also
        makes the kernel load its module) on a NETLINK_GENERIC socket. OSError with the
        kernel's errno (ENOENT: no such family) if it has none."""
        from pyroute2.netlink import ctrlmsg

        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", name)]
        (answer,) = self.query([Request(msg, GENL_ID_CTRL)])
        if isinstance(answer, Failure):
            raise OSError(answer.errno, answer.message)
        reply = ctrlmsg(answer)
        reply.decode()
        return int(reply.get_attr("CTRL_ATTR_FAMILY_ID"))


def frame(msg: Any, mtype: int, flags: int, seq: int) -> bytes:
    """One netlink message: the header, then msg — the body as bytes, or a pyroute2
    message object (encoded here, its header set)."""
    if isinstance(msg, bytes):
        return _HDR.pack(_HDR.size + len(msg), mtype, flags, seq, 0) + msg
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.reset()
    msg.encode()
    return bytes(msg.data)


def receive(sock: socket.socket, size: int, waiting: int) -> bytes:
    """sock.recv(size); OSError(ETIMEDOUT) naming what is missing if the kernel's answer
    does not come (a socket made by NetlinkSocket waits ANSWER_TIMEOUT at most)."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        raise OSError(
            errno.ETIMEDOUT,
            f"netlink: no answer from the kernel to {waiting} request{'s' if waiting != 1 else ''} "
            f"within {ANSWER_TIMEOUT} s (lost: nothing more will come)",
        ) from None


def replies(
    sock: socket.socket, seq: int, *, dump: bool = True, bufsize: int = 1 << 20
) -> Iterator[tuple[bytes, int, int]]:
    """The (buffer, offset, length) of each reply to request `seq` on any netlink socket
    (dump: until NLMSG_DONE; else the first one); an NLMSG_ERROR reply raises OSError
    with the kernel's words."""
    while True:
        data = receive(sock, bufsize, 1)
        for offset, length, kind, flags, mseq in _frames(data):
            if mseq != seq:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + 16)
                raise OSError(-code, _error_text(-code, data, offset, length, flags))
            yield data, offset, length
            if not dump:
                return


def _frames(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each netlink message in one received buffer."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            return  # malformed: never loop on it
        yield offset, length, mtype, flags, seq
        offset += (length + 3) & ~3


def _attrs(data: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in data[pos:end]."""
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, pos)
        if alen < 4:
            return  # malformed: never loop on it
        yield atype, data[pos + 4 : pos + alen]
        pos += (alen + 3) & ~3


def _error_text(code: int, data: bytes, offset: int, length: int, flags: int) -> str:
    text = os.strerror(code)
    name = errno.errorcode.get(code)
    if name:
        text += f" ({name})"
    if flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the original request is not echoed: TLVs follow its header.
        for atype, value in _attrs(data, offset + 16 + 4 + 16, offset + length):
            if atype == NLMSGERR_ATTR_MSG:
                kernel_says = value.split(b"\0", 1)[0].decode(errors="replace")
                if kernel_says:
                    text += f": {kernel_says}"
    return text
