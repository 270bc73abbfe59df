"""The real kernel driver: scheduling, namespaces and sockets. What each op sends is
somebody else's: rtnetlink messages are built by encode.py (pure), sysctls written by
sysctl.py, IPVS by ipvs.py, ipsets/nftables/iptables dumps by nft.py, `exec` commands
run by command.py; namespaces are made by netns.py, and every netlink socket is
nlsock.py's.

Each stage's ops are grouped per namespace; a few worker threads take namespaces
in turn, so one thread encodes messages while another waits in the kernel.

Those modules (pyroute2's message classes, libnftables: ~0.3 s) are imported by the
methods that send what they build: `down`, which only reads marks and deletes
namespaces, starts without them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from netlab.kernel import netns as nsops
from netlab.kernel.driver import SETTLE_TIMEOUT, AddressView, LinkView, NamespaceView, OpFailed
from netlab.kernel.nlsock import NetlinkSocket, Request
from netlab.naming import parse_mark
from netlab.plan.ops import (
    AddIpvsReal,
    AddIpvsService,
    CreateIpset,
    CreateLink,
    CreateNetns,
    LoadNftables,
    MarkNetns,
    Op,
    RestoreIptables,
    RunCommand,
    SetLink,
    SetSysctl,
    VethType,
)
from netlab.plan.removal import GONE_ALREADY, Remove


def _subject(op: Op) -> Op:
    """The op whose kind says which path takes it: a Remove goes where its op went."""
    return op.op if isinstance(op, Remove) else op


@dataclass
class _Handle:
    """An open namespace: its fd (for IFLA_NET_NS_FD), an rtnetlink socket inside it, and a
    name → ifindex cache refreshed on a miss (links appear in it from other namespaces)."""

    fd: int
    sock: NetlinkSocket
    index: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.sock.close()
        os.close(self.fd)


def _settings_order(op: Op) -> int:
    """A new namespace's sysctls before its mark brings lo up: with IPv6 off first (as in
    a lab without IPv6), lo never gets the ::1 and routes that turning it off removes."""
    return 0 if isinstance(op, SetSysctl) else 1


class NetlinkDriver:
    """KernelDriver over netlink: one stage's ops grouped per namespace, namespaces taken
    in turn by `workers` threads, each namespace's rtnetlink messages sent in batches on
    a socket opened inside it (kept, with the namespace's fd, until close())."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()
        self._host: NetlinkSocket | None = None
        self._later: list[CreateLink] = []  # bridge ports made down, to bring up later (_up_later)
        # the host's socket is one for every namespace's worker: one request (send, then its
        # ACKs) at a time, or a worker reads another's ACKs and waits for its own forever
        self._host_turn = threading.Lock()
        nsops.raise_fd_limit()  # two descriptors per namespace while building: a 1000-namespace lab needs 2000

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if self._host is not None:
            self._host.close()
            self._host = None

    def _handle(self, name: str) -> _Handle:
        with self._lock:
            handle = self._handles.get(name)
        if handle is None:
            fd = nsops.open_netns(name)

            def make() -> NetlinkSocket:
                nsops.enter_here(fd)
                return NetlinkSocket()

            handle = _Handle(fd, nsops.in_thread(make))
            with self._lock:
                self._handles[name] = handle
        return handle

    def _ifindex(self, ns: str, name: str) -> int:
        handle = self._handle(ns)
        if name not in handle.index:
            handle.index = handle.sock.link_indexes()
        if name not in handle.index:
            raise LookupError(f"no interface {name} in namespace {ns}")
        return handle.index[name]

    # ------------------------------------------------------------ apply

    def apply(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
        if not ops:
            return
        far_ends = all(isinstance(op, SetLink) for op in ops)  # the stage that brings veths' far ends up
        if not far_ends and any(isinstance(op, CreateLink) for op in ops):
            self._bring_up_later()  # a tunnel, vlan, … may be made on one of them
        try:
            self._apply(ops, on_done)
        except BaseException:
            self._later.clear()  # the build failed: what it undoes needs none of them up
            raise
        if far_ends:
            self._bring_up_later()

    def _apply(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
        if any(isinstance(op, CreateNetns) for op in ops):
            self._create_namespaces(ops, on_done)
        elif all(isinstance(op, SetSysctl) for op in ops):
            from netlab.kernel import sysctl

            self._per_namespace(ops, on_done, self._inside(sysctl.apply_here))
        elif all(isinstance(op, RunCommand) for op in ops):
            from netlab.kernel import command

            for op in ops:
                assert isinstance(op, RunCommand)
                command.run(op)
                on_done(op)
        elif all(isinstance(_subject(op), (CreateIpset, LoadNftables, RestoreIptables)) for op in ops):
            # nft.py: ipsets over netlink and libnftables in a thread inside the namespace,
            # iptables-nft-restore via ip netns exec
            from netlab.kernel import nft

            self._per_namespace(ops, on_done, lambda ns, group: nft.apply_in(self._handle(ns).fd, ns, group))
        elif all(isinstance(_subject(op), (AddIpvsService, AddIpvsReal)) for op in ops):
            # a generic netlink socket, like any, belongs to the namespace it is opened in
            from netlab.kernel import ipvs as ipvs_ops

            self._per_namespace(ops, on_done, self._inside(ipvs_ops.apply_here))
        else:
            self._per_namespace(ops, on_done, self._netlink)

    def _run_workers(self, chunks: list[list[str]], work: Callable[[str], None], stop: threading.Event) -> None:
        """Run work(ns) for every namespace, chunks in parallel. Ctrl-C stops the workers
        between namespaces, and we wait for them so the caller's rollback sees all they made."""

        # Wait on our own "finished" events, not Thread.join(): in CPython 3.11 a join()
        # interrupted by Ctrl-C/SIGTERM marks a thread that is still running as stopped
        # (threading._wait_for_tstate_lock, bpo-45274 handling), and the rollback would run
        # while a worker still creates namespaces (one was left behind after SIGTERM).
        # A worker announces itself (entered) before it looks at `stop`, so one that never
        # got going needs no waiting for once `stop` is set: it will do nothing.
        def loop(names: list[str], entered: threading.Event, finished: threading.Event) -> None:
            try:
                entered.set()
                for name in names:
                    if stop.is_set():
                        return
                    work(name)
            finally:
                finished.set()

        interrupted: BaseException | None = None
        workers: list[tuple[threading.Event, threading.Event]] = []
        try:
            for c in chunks:
                if c:
                    workers.append((threading.Event(), threading.Event()))
                    threading.Thread(target=loop, args=(c, *workers[-1]), name="netlab-worker").start()
        except BaseException as err:  # interrupted (or out of threads) while starting workers
            stop.set()
            interrupted = err
        for entered, finished in workers:
            while not finished.is_set() and (entered.is_set() or not stop.is_set()):
                try:
                    finished.wait(0.5 if not entered.is_set() else None)
                except BaseException as err:  # KeyboardInterrupt or our SIGTERM exception
                    stop.set()
                    interrupted = err
        if interrupted is not None:
            raise interrupted

    def _chunks(self, names: list[str]) -> list[list[str]]:
        return [names[i :: self.workers] for i in range(self.workers)]

    def _per_namespace(
        self,
        ops: Sequence[Op],
        on_done: Callable[[Op], None],
        handler: Callable[[str, list[Op]], list[tuple[Op, str]]],
    ) -> None:
        groups: dict[str, list[Op]] = {}
        for op in ops:
            groups.setdefault(op.ns, []).append(op)
        position = {id(op): i for i, op in enumerate(ops)}
        failures: list[tuple[Op, str]] = []
        stop = threading.Event()

        def work(ns: str) -> None:
            try:
                failed = handler(ns, groups[ns])
            except Exception as err:  # an unexpected error must still fail the op, not the thread
                failed = [(groups[ns][0], f"{type(err).__name__}: {err}")]
            bad = {id(op) for op, _ in failed}
            for op in groups[ns]:
                if id(op) not in bad:
                    on_done(op)
            if failed:
                failures.extend(failed)
                stop.set()

        self._run_workers(self._chunks(list(groups)), work, stop)
        if failures:
            op, reason = min(failures, key=lambda f: position[id(f[0])])
            raise OpFailed(op, reason)

    # ------------------------------------------------------------ namespaces

    def _create_namespaces(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
        from netlab.kernel import sysctl

        nsops.prepare_netns_dir()
        groups: dict[str, list[Op]] = {}
        for op in ops:
            groups.setdefault(op.ns, []).append(op)
        failures: list[OpFailed] = []
        stop = threading.Event()

        def fail(op: Op, err: BaseException) -> None:
            failures.append(OpFailed(op, sysctl.reason(err)))
            stop.set()

        # First every namespace, then each one's settings: a sysctl write waits for the
        # RTNL (addrconf's trylock, retried) that the other worker's namespace creation
        # holds, and in a pass of their own they meet less (500 namespaces: 0.24 → 0.22 s,
        # bench/README.md). Each worker thread unshares into, then enters, every namespace
        # of its chunk in turn; it ends afterwards, so no thread is ever left in a lab
        # namespace.
        def create(ns: str) -> None:
            for op in groups[ns]:
                if not isinstance(op, CreateNetns):
                    continue
                try:
                    nsops.create_here(ns, points)
                except (OSError, LookupError) as err:
                    return fail(op, err)
                on_done(op)  # made as soon as it exists: the rollback deletes it even if its socket fails
                try:
                    handle = _Handle(nsops.open_netns(ns), NetlinkSocket())
                except OSError as err:
                    return fail(op, err)
                with self._lock:
                    self._handles[ns] = handle

        def configure(ns: str) -> None:
            settings = sorted((op for op in groups[ns] if not isinstance(op, CreateNetns)), key=_settings_order)
            if not settings:
                return
            try:
                nsops.enter_here(self._handle(ns).fd)  # /proc/sys is the calling thread's namespace's
            except OSError as err:
                return fail(settings[0], err)
            for op in settings:
                try:
                    self._namespace_setting(ns, op)
                except (OSError, LookupError, TypeError) as err:
                    return fail(op, err)
                on_done(op)

        points = nsops.MountPoints()
        try:
            self._run_workers(self._chunks(list(groups)), create, stop)
        finally:
            points.close()
        if not failures:
            self._run_workers(self._chunks(list(groups)), configure, stop)
        if failures:
            raise failures[0]

    def _namespace_setting(self, ns: str, op: Op) -> None:
        from netlab.kernel import sysctl

        if isinstance(op, SetSysctl):
            sysctl.write(op.key, op.value)
        elif isinstance(op, MarkNetns):
            self._send(ns, [op])
        else:
            raise TypeError(f"unexpected {type(op).__name__} among namespace ops")

    def _send(self, ns: str, ops: Sequence[Op]) -> None:
        """Send ops' rtnetlink messages in ns; OSError with the kernel's words for the first refused."""
        failed = self._netlink(ns, list(ops))
        if failed:
            raise OSError(0, failed[0][1])

    # ------------------------------------------------------------ in a namespace's thread

    def _inside(
        self, apply_here: Callable[[Sequence[Op]], list[tuple[Op, str]]]
    ) -> Callable[[str, list[Op]], list[tuple[Op, str]]]:
        """A per-namespace handler running apply_here(ops) in a thread that has entered
        the namespace (for what has no fd to aim at it: /proc/sys, a fresh netlink socket)."""

        def handler(ns: str, ops: list[Op]) -> list[tuple[Op, str]]:
            fd = self._handle(ns).fd

            def run() -> list[tuple[Op, str]]:
                nsops.enter_here(fd)
                return apply_here(ops)

            return nsops.in_thread(run)

        return handler

    # ------------------------------------------------------------ rtnetlink

    def _netlink(self, ns: str, ops: list[Op]) -> list[tuple[Op, str]]:
        """Encode every op (resolving the names it uses), send them in batches on ns's
        socket; (op, reason) of those that did not resolve or were refused."""
        from netlab.kernel import encode

        msgs: list[Request] = []
        sent: list[Op] = []
        failed: list[tuple[Op, str]] = []

        def ifindex(name: str) -> int:
            return self._ifindex(ns, name)

        def netns_fd(other: str) -> int:
            return self._handle(other).fd

        # In order, each run of ops on its socket: ns's, or the host's for a multihost tunnel
        # (made from the host's namespace, so its UDP socket stays there).
        for op in ops:
            if sent and encode.from_host(op) != encode.from_host(sent[-1]):
                failed += self._send_batch(encode.from_host(sent[-1]), ns, msgs, sent)
                msgs, sent = [], []
            try:
                msgs.append(encode.request(self._made_down(op), ifindex, netns_fd))
                sent.append(op)
            except LookupError as err:
                if not isinstance(op, Remove):  # its device is gone: so is what lived on it
                    failed.append((op, str(err)))
        if sent:
            failed += self._send_batch(encode.from_host(sent[-1]), ns, msgs, sent)
        if any(isinstance(op, Remove) and isinstance(op.op, CreateLink) for op in ops):
            with self._lock:  # a name may come back with another index (a veth's far end, elsewhere, too)
                for handle in self._handles.values():
                    handle.index = {}
        return failed

    # A veth's near end that is a bridge port is made down and brought up once its far end
    # is (after the link settings): made up, it would join its bridge as a forwarding port
    # at once, be disabled when the kernel applies its "no carrier" (the far end is still
    # down: dev_deactivate, an RCU grace period, every other port walked), and enabled
    # again when the far end comes up. Each of those walks all the bridge's ports. Made
    # down, it is enabled once. 1000 ports, raw netlink, 8 rounds (bench note): 1.21 s
    # instead of 1.46 s until every port forwards, sys CPU 0.42 s instead of 0.50 s.

    def _made_down(self, op: Op) -> Op:
        if isinstance(op, CreateLink) and op.up and op.master and isinstance(op.type, VethType):
            with self._lock:
                self._later.append(op)
            return replace(op, up=False)
        return op

    def _bring_up_later(self) -> None:
        """Bring up the bridge ports made down (_made_down); OpFailed names the op that made one."""
        with self._lock:
            later, self._later = self._later, []
        if not later:
            return
        ups: list[Op] = [SetLink(op.ns, op.what, name=op.name, up=True) for op in later]
        made = {id(up): op for up, op in zip(ups, later, strict=True)}
        try:
            self._per_namespace(ups, lambda _op: None, self._netlink)
        except OpFailed as err:
            raise OpFailed(made[id(err.op)], err.reason) from None

    def _send_batch(self, host: bool, ns: str, msgs: list[Request], sent: list[Op]) -> list[tuple[Op, str]]:
        if host:
            sock = self._host_socket()
            with self._host_turn:
                failures = sock.request(msgs)
        else:
            failures = self._handle(ns).sock.request(msgs)
        return [
            (sent[f.index], f.message)
            for f in failures
            if not (isinstance(sent[f.index], Remove) and f.errno in GONE_ALREADY)  # gone with its link
        ]

    def _host_socket(self) -> NetlinkSocket:
        """An rtnetlink socket in the host's namespace: the main thread's, which never moves
        (/proc/self is the thread group leader's), opened from a thread that may have."""
        with self._lock:
            if self._host is None:
                fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

                def make() -> NetlinkSocket:
                    nsops.enter_here(fd)
                    return NetlinkSocket()

                try:
                    self._host = nsops.in_thread(make)
                finally:
                    os.close(fd)
            return self._host

    # ------------------------------------------------------------ links up

    def settle(self, ops: Sequence[Op], timeout: float = SETTLE_TIMEOUT) -> None:
        """Every link `ops` bring up, up as the kernel sees it (settle.py): each namespace's
        links asked for in one batch on its socket, by the workers in turn."""
        from netlab.kernel import settle

        self._bring_up_later()
        wants = settle.wanted(ops)
        deadline = time.monotonic() + timeout
        left: dict[str, list[tuple[settle.Want, str]]] = {}

        def work(ns: str) -> None:
            troubles = settle.until_up(self._handle(ns).sock, wants[ns], deadline)
            if troubles:
                left[ns] = troubles

        self._run_workers(self._chunks(list(wants)), work, threading.Event())
        if left:
            position = {id(op): i for i, op in enumerate(ops)}
            first = min(
                (want.op for troubles in left.values() for want, _ in troubles), key=lambda op: position[id(op)]
            )
            raise OpFailed(first, settle.reason({ns: left[ns] for ns in wants if ns in left}, timeout))

    # ------------------------------------------------------------ teardown and reading

    def delete_namespaces(self, names: Iterable[str]) -> list[str]:
        deleted = []
        for name in names:
            with self._lock:
                handle = self._handles.pop(name, None)
            if handle:
                handle.close()
            if nsops.delete_netns(name):
                deleted.append(name)
        return deleted

    def processes(self, names: Iterable[str]) -> dict[str, list[int]]:
        return nsops.processes_in(list(names))

    def namespaces(self, only: Callable[[str], bool] | None = None) -> dict[str, tuple[str, str] | None]:
        names = [n for n in nsops.list_netns() if only is None or only(n)]

        def read() -> dict[str, tuple[str, str] | None]:
            out: dict[str, tuple[str, str] | None] = {}
            for name in names:
                try:
                    fd = nsops.open_netns(name)
                except OSError:
                    continue  # vanished meanwhile
                try:
                    nsops.enter_here(fd)
                    sock = NetlinkSocket()
                    try:
                        out[name] = parse_mark(sock.link_alias(1))  # the mark is lo's alias
                    finally:
                        sock.close()
                except OSError:
                    out[name] = None  # e.g. a stale file that is no longer a namespace mount
                finally:
                    os.close(fd)
            return out

        return nsops.in_thread(read)

    def observe(self, name: str) -> NamespaceView:
        from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        from netlab.kernel import tc
        from netlab.kernel.encode import IFF_UP

        sock = self._handle(name).sock
        links = sock.dump(ifinfmsg(), RTM_GETLINK)
        addrs = sock.dump(ifaddrmsg(), RTM_GETADDR)
        by_index: dict[int, list[AddressView]] = {}
        for a in addrs:
            ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            fam = 4 if a["family"] == socket.AF_INET else 6
            by_index.setdefault(a["index"], []).append(AddressView(f"{ip}/{a['prefixlen']}", fam))
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
        netem = {
            q["index"]: words for q in sock.dump(tc.NetemMsg(), tc.RTM_GETQDISC, _qdisc) if (words := tc.netem_words(q))
        }
        views = []
        for m in links:
            info = m.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else ""
            data = info.get_attr("IFLA_INFO_DATA") if info and kind == "vrf" else None
            master = m.get_attr("IFLA_MASTER")
            views.append(
                LinkView(
                    name=m.get_attr("IFLA_IFNAME"),
                    index=m["index"],
                    kind=kind or "",
                    up=bool(m["flags"] & IFF_UP),
                    oper=str(m.get_attr("IFLA_OPERSTATE") or "unknown").lower(),
                    mtu=int(m.get_attr("IFLA_MTU") or 0),
                    mac=str(m.get_attr("IFLA_ADDRESS") or ""),
                    master=names.get(master) if master else None,
                    alias=m.get_attr("IFLA_IFALIAS"),
                    addresses=tuple(by_index.get(m["index"], [])),
                    table=data.get_attr("IFLA_VRF_TABLE") if data is not None else None,
                    netem=netem.get(m["index"]),
                )
            )
        return NamespaceView(name, tuple(views))


def _qdisc(data: bytes) -> Any:
    from netlab.kernel import tc

    msg = tc.NetemMsg(data)
    msg.decode()
    return msg
