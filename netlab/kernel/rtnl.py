"""A batching rtnetlink socket: pyroute2's message classes for the wire format, one
`send()` for many requests, ACKs read afterwards and matched by sequence number.

Why not pyroute2's IPRoute: it runs an asyncio loop and waits for one reply per call,
and opening it in a namespace forks a child. Batching is what makes hundreds of
namespaces cheap: the kernel handles every message of a buffer in one system call.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from netlab.kernel.netns import high_fd

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

_HDR = struct.Struct("=IHHII")
BATCH = 200  # messages per send(): keeps the ACKs well inside the receive buffer
# Queries per send(): each answer holds a few KiB of the receive buffer until it is read,
# so 32 fit even in the default 208 KiB one (when SO_RCVBUFFORCE was refused).
QUERY_BATCH = 32


@dataclass(frozen=True)
class Failure:
    index: int  # position in the batch
    errno: int
    message: str  # strerror, plus the kernel's own explanation (extack) when it gives one

    def __str__(self) -> str:
        return self.message


class RtnlSocket:
    """NETLINK_ROUTE socket bound to the namespace of the thread that created it (or of
    another netlink protocol: netlab.kernel.ipvs batches generic netlink requests on it)."""

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
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def request(self, msgs: Sequence[tuple[Any, int, int]]) -> list[Failure]:
        """Send (message, type, flags) requests with ACKs; return the ones that failed."""
        failures: list[Failure] = []
        for start in range(0, len(msgs), BATCH):
            chunk = msgs[start : start + BATCH]
            seqs: dict[int, int] = {}
            buf = bytearray()
            for i, (msg, mtype, flags) in enumerate(chunk):
                seq = self._next_seq()
                seqs[seq] = start + i
                msg["header"]["type"] = mtype
                msg["header"]["flags"] = flags | NLM_F_REQUEST | NLM_F_ACK
                msg["header"]["sequence_number"] = seq
                msg["header"]["pid"] = 0
                msg.reset()
                msg.encode()
                buf += msg.data
            self.sock.sendall(bytes(buf))
            failures += self._collect_acks(seqs)
        return failures

    def _collect_acks(self, pending: dict[int, int]) -> list[Failure]:
        failures: list[Failure] = []
        while pending:
            data = self.sock.recv(1 << 20)
            for offset, length, mtype, flags, seq in _frames(data):
                if mtype == NLMSG_ERROR and seq in pending:
                    index = pending.pop(seq)
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code != 0:
                        failures.append(Failure(index, -code, _error_text(-code, data, offset, length, flags)))
        return failures

    def _dump_replies(self, seq: int) -> Iterator[tuple[bytes, int, int]]:
        return replies(self.sock, seq)

    def link_indexes(self) -> dict[str, int]:
        """Interface name → ifindex of every link, parsing only those two fields: decoding
        whole link messages with pyroute2 costs ~1 ms per namespace, this a few µs."""
        seq = self._next_seq()
        # RTM_GETLINK dump: nlmsghdr + struct ifinfomsg (16 bytes, all zero)
        self.sock.sendall(_HDR.pack(_HDR.size + 16, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + bytes(16))
        out: dict[str, int] = {}
        for data, offset, length in self._dump_replies(seq):
            (index,) = struct.unpack_from("=i", data, offset + 20)
            pos, end = offset + 32, offset + length
            while pos + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype == IFLA_IFNAME:
                    out[data[pos + 4 : pos + alen].split(b"\0", 1)[0].decode()] = index
                    break
                pos += (alen + 3) & ~3
        return out

    def dump(self, msg: Any, mtype: int) -> list[Any]:
        """A dump request (e.g. RTM_GETLINK); returns the decoded pyroute2 messages."""
        seq = self._next_seq()
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        msg["header"]["sequence_number"] = seq
        msg.encode()
        self.sock.sendall(msg.data)
        marshal = MarshalRtnl()
        return [next(iter(marshal.parse(data[offset : offset + length]))) for data, offset, length in
                self._dump_replies(seq)]

    def query(self, msgs: Sequence[tuple[Any, int, int]]) -> list[bytes | Failure]:
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
                seq = self._next_seq()
                pending[seq] = start + i
                msg["header"]["type"] = mtype
                msg["header"]["flags"] = flags | NLM_F_REQUEST  # no ACK: the answer is the reply
                msg["header"]["sequence_number"] = seq
                msg["header"]["pid"] = 0
                msg.reset()
                msg.encode()
                buf += msg.data
            self.sock.sendall(bytes(buf))
            while pending:
                data = self.sock.recv(1 << 20)
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


def replies(sock: socket.socket, seq: int, *, dump: bool = True,
            bufsize: int = 1 << 20) -> Iterator[tuple[bytes, int, int]]:
    """The (buffer, offset, length) of each reply to request `seq` on any netlink socket
    (dump: until NLMSG_DONE; else the first one); an NLMSG_ERROR reply raises OSError
    with the kernel's words."""
    while True:
        data = sock.recv(bufsize)
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


def _error_text(code: int, data: bytes, offset: int, length: int, flags: int) -> str:
    text = os.strerror(code)
    name = errno.errorcode.get(code)
    if name:
        text += f" ({name})"
    if flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the original request is not echoed: TLVs follow its header.
        pos = offset + 16 + 4 + 16
        end = offset + length
        while pos + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, pos)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                kernel_says = data[pos + 4 : pos + alen].split(b"\0", 1)[0].decode(errors="replace")
                if kernel_says:
                    text += f": {kernel_says}"
            pos += (alen + 3) & ~3
    return text

