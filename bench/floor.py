"""The floor: bench/run's lab (one bridge, N pod namespaces; one bridge per 1000 pods beyond
that, as bench/namespaces' lab: a Linux bridge takes at most 1024 ports) built and removed by raw
netlink in the least work the kernel allows, so netlab's overhead can be measured against
what no tool can beat on this machine.

Standard library only, messages packed by hand with struct:
- 2 worker processes, each making half of the pod namespaces, one after the other, in
  its main thread (unshare(CLONE_NEWNET) + a bind mount onto /run/netns/NAME, as
  `ip netns add` does, the file mounted onto a hard link of one unnamed file as netlab
  makes it: see make_inode) and opening that namespace's netlink socket while inside it;
- one RTM_NEWLINK per pod: the veth with its host end enslaved to its bridge, and the
  peer named eth0 with ifindex 2, placed directly into the pod (IFLA_NET_NS_FD; the peer
  cannot be up at creation: the kernel answers ENOTCONN until the pair is linked);
- per pod: lo up, eth0 up, the address on ifindex 2, the default route: one send;
- then the host ends up, each once its far end is: a bridge port made up at creation with
  its far end down is disabled and enabled again, each time walking every port of its
  bridge, as netlab's bridge ports are made (netlab/kernel/netlink.py, _made_down; 2000
  pods, 3 rounds each way: 3.0-4.0 s against 3.5-4.1 s up at once);
- with more than one bridge, the host forwards between them (net.ipv4.ip_forward, as
  bench/namespaces' lab sets it);
- every send carries many messages; the ACKs are read afterwards and checked;
- down: each worker unmounts and unlinks its half of the namespaces (their veths go
  with them), then the host namespace goes.

Usage (root): python3 bench/floor.py up|down --prefix PFX --n N
Namespaces: PFX-host and PFX-0 … PFX-(N-1). Nothing is done in the caller's namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import os
import resource
import socket
import struct
import sys
from collections.abc import Callable

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED, MNT_DETACH = 0x1000, 0x4000, 1 << 20, 2
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
NLMSG_ERROR = 2
F_REQ, F_ACK, F_EXCL, F_CREATE = 1, 4, 0x200, 0x400
NEW = F_REQ | F_ACK | F_EXCL | F_CREATE
IFF_UP = 1
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
BRIDGE_INDEX, ETH0_INDEX = 2, 2  # asked for at creation: ifindex 1 is lo in a fresh namespace
PORT_INDEX = 100  # pod i's bridge port p<i> is asked for ifindex 100 + i
PODS_PER_BRIDGE = 1000  # bridge b (ifindex BRIDGE_INDEX + b) has 10.b.0.1/16 and pods b*1000 on
PER_SEND = 64
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
WORKERS = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# ---------------------------------------------------------------- messages


def attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def msg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def ifinfo(index: int = 0, flags: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, IFF_UP if flags else 0)


def bridge(seq: int, b: int) -> bytes:
    kind = attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"bridge"))
    name = attr(IFLA_IFNAME, f"br{b}".encode() + b"\0")
    return msg(RTM_NEWLINK, NEW, seq, ifinfo(BRIDGE_INDEX + b, IFF_UP) + name + kind)


def veth(seq: int, i: int, pod_fd: int) -> bytes:
    peer = ifinfo(ETH0_INDEX) + attr(IFLA_IFNAME, b"eth0\0") + attr(IFLA_NET_NS_FD, struct.pack("=I", pod_fd))
    info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
    b = i // PODS_PER_BRIDGE
    body = ifinfo(PORT_INDEX + i) + attr(IFLA_IFNAME, f"p{i}".encode() + b"\0")
    body += attr(IFLA_MASTER, struct.pack("=I", BRIDGE_INDEX + b)) + attr(IFLA_LINKINFO, info)
    return msg(RTM_NEWLINK, NEW, seq, body)


def address(seq: int, index: int, addr: str, plen: int) -> bytes:
    raw = socket.inet_aton(addr)
    body = struct.pack("=BBBBI", socket.AF_INET, plen, 0, 0, index) + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    return msg(RTM_NEWADDR, NEW, seq, body)


def default_route(seq: int, via: str) -> bytes:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
    return msg(RTM_NEWROUTE, NEW, seq, body + attr(RTA_GATEWAY, socket.inet_aton(via)))


def link_up(seq: int, index: int) -> bytes:
    return msg(RTM_NEWLINK, F_REQ | F_ACK, seq, ifinfo(index, IFF_UP))


def pod_addr(i: int) -> str:  # as bench.py's up to 1000 pods, and bench/namespaces.py's
    b, n = divmod(i, PODS_PER_BRIDGE)
    return f"10.{b}.{(n + 2) // 256}.{(n + 2) % 256}"


def gateway(b: int) -> str:
    return f"10.{b}.0.1"


# ---------------------------------------------------------------- sockets


def nl_socket() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((0, 0))
    s.connect((0, 0))
    return s


def send_all(s: socket.socket, messages: list[bytes]) -> None:
    """Many messages per send; then every ACK, each checked."""
    for i in range(0, len(messages), PER_SEND):
        chunk = messages[i : i + PER_SEND]
        s.send(b"".join(chunk))
        read_acks(s, len(chunk))


def read_acks(s: socket.socket, count: int) -> None:
    acks = 0
    while acks < count:
        data = s.recv(1 << 16)
        pos = 0
        while pos + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, pos)
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, pos + 16)
                if code:
                    raise OSError(-code, os.strerror(-code))
                acks += 1
            pos += (length + 3) & ~3


# ---------------------------------------------------------------- namespaces


def make_netns(name: str, inode: int | None = None) -> int:
    """Unshare the calling (single-threaded) process into a new namespace, name it, and
    return an fd of it. With `inode` (an O_TMPFILE in NETNS_DIR) its mount point is a hard
    link of that inode, not a new file: see make_inode."""
    path = os.path.join(NETNS_DIR, name)
    if inode is None or _libc.linkat(inode, b"", AT_FDCWD, path.encode(), AT_EMPTY_PATH) != 0:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    _check(_libc.unshare(CLONE_NEWNET), "unshare")
    _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), f"mount {path}")
    return os.open(path, os.O_RDONLY)


def make_inode() -> int | None:
    """One unnamed file in NETNS_DIR that every mount point is made a hard link of: a new
    file per namespace is a new inode, and on a filesystem without a journal (ext4 here)
    finding a free one scans past those freed by the last teardown, a cost of the
    filesystem and not of the kernel's namespaces (netlab.kernel.netns.MountPoints does
    the same). None where the filesystem cannot."""
    try:
        return os.open(NETNS_DIR, os.O_TMPFILE | os.O_WRONLY, 0)
    except OSError:
        return None


def delete_netns(name: str) -> None:
    path = os.path.join(NETNS_DIR, name).encode()
    if _libc.umount2(path, MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(-1, f"umount {name}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def prepare_dir() -> None:
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    d = NETNS_DIR.encode()
    if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
        _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "bind /run/netns")
        _check(_libc.mount(b"none", d, None, MS_SHARED | MS_REC, None), "make-shared /run/netns")


# ---------------------------------------------------------------- the two phases


def build_worker(prefix: str, pods: range, host_fd: int) -> None:
    _check(_libc.setns(host_fd, CLONE_NEWNET), "setns host")
    host = nl_socket()
    made = []
    inode = make_inode()
    for i in pods:
        fd = make_netns(f"{prefix}-{i}", inode)
        made.append((i, fd, nl_socket()))
    send_all(host, [veth(k, i, fd) for k, (i, fd, _) in enumerate(made, 1)])
    for i, _fd, s in made:
        s.send(
            link_up(1, 1)
            + link_up(2, ETH0_INDEX)
            + address(3, ETH0_INDEX, pod_addr(i), 16)
            + default_route(4, gateway(i // PODS_PER_BRIDGE))
        )
    for _i, _fd, s in made:
        read_acks(s, 4)
    send_all(host, [link_up(k, PORT_INDEX + i) for k, (i, _fd, _s) in enumerate(made, 1)])


def in_workers(jobs: list[range], work: Callable[[range], None]) -> None:
    pids = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work(job)
            except BaseException as err:
                sys.stderr.write(f"floor worker: {err}\n")
                code = 1
            os._exit(code)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    if failed:
        raise SystemExit(f"floor: {len(failed)} worker(s) failed")


def split(n: int) -> list[range]:
    step = (n + WORKERS - 1) // WORKERS
    return [range(a, min(a + step, n)) for a in range(0, n, step)]


def up(prefix: str, n: int) -> None:
    prepare_dir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the host namespace, made by a child so this process stays where it is
        try:
            fd = make_netns(f"{prefix}-host")
            bridges = range((n + PODS_PER_BRIDGE - 1) // PODS_PER_BRIDGE)
            send_all(
                nl_socket(), [m for b in bridges for m in (bridge(1, b), address(2, BRIDGE_INDEX + b, gateway(b), 16))]
            )
            if len(bridges) > 1:  # /proc/sys/net is the opener's namespace's: this child's
                with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                    f.write("1")
            os.close(fd)
            os.write(w, b"1")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    if os.read(r, 1) != b"1":
        raise SystemExit("floor: the host namespace failed")
    host_fd = os.open(os.path.join(NETNS_DIR, f"{prefix}-host"), os.O_RDONLY)
    in_workers(split(n), lambda pods: build_worker(prefix, pods, host_fd))


def down(prefix: str, n: int) -> None:
    def delete(pods: range) -> None:
        for i in pods:
            delete_netns(f"{prefix}-{i}")

    in_workers(split(n), delete)
    delete_netns(f"{prefix}-host")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("verb", choices=("up", "down"))
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--n", type=int, required=True)
    args = ap.parse_args()
    # a worker holds two descriptors per namespace (its file, its socket): as netlab, lift
    # the soft limit to the hard one
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    (up if args.verb == "up" else down)(args.prefix, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
