"""The real kernel driver: namespaces via netns.py, everything else via batched
rtnetlink (pyroute2 messages), sysctls via /proc/sys inside the namespace, nftables
rulesets and iptables dumps via nft.py (libnftables in a thread inside the namespace,
iptables-nft-restore via `ip netns exec`), and `exec` commands via `ip netns exec`.

Each stage's ops are grouped per namespace; a few worker threads take namespaces
in turn, so one thread encodes messages while another waits in the kernel.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import (
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_NEWRULE,
)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NTF_MASTER, NTF_SELF, NUD_NOARP, NUD_PERMANENT, NUD_REACHABLE, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netlab.kernel import netns as nsops
from netlab.kernel import nft
from netlab.kernel.driver import AddressView, LinkView, NamespaceView, OpFailed
from netlab.kernel.ipvs import apply_here as apply_ipvs_here
from netlab.kernel.rtnl import RtnlSocket
from netlab.naming import parse_mark
from netlab.plan.ops import (
    AddAddress,
    AddFdb,
    AddIpvsReal,
    AddIpvsService,
    AddNeighbor,
    AddRoute,
    AddRule,
    CreateIpset,
    CreateLink,
    CreateNetns,
    LoadNftables,
    MarkNetns,
    Op,
    RestoreIptables,
    RunCommand,
    SetBridgePort,
    SetLink,
    SetSysctl,
)
from netlab.vocabulary import BUILTIN_TABLES

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 4
RTN_TYPES = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}
FR_ACTIONS = {"lookup": 1, "goto": 2, "nop": 3, "blackhole": 6, "unreachable": 7, "prohibit": 8}
FIB_RULE_INVERT = 0x2  # linux/fib_rules.h: `ip rule add not …`
AF_BRIDGE = 7  # PF_BRIDGE: the family of FDB entries


@dataclass
class _Handle:
    """An open namespace: its fd (for IFLA_NET_NS_FD), an rtnl socket inside it, and a
    name → ifindex cache refreshed on a miss (links appear in it from other namespaces)."""

    fd: int
    sock: RtnlSocket
    index: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.sock.close()
        os.close(self.fd)


class NetlinkDriver:
    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()
        nsops.raise_fd_limit()  # two descriptors per namespace while building: a 1000-namespace lab needs 2000

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def _handle(self, name: str) -> _Handle:
        with self._lock:
            handle = self._handles.get(name)
        if handle is None:
            fd = nsops.open_netns(name)

            def make() -> RtnlSocket:
                nsops.enter_here(fd)
                return RtnlSocket()

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
        if any(isinstance(op, CreateNetns) for op in ops):
            self._create_namespaces(ops, on_done)
        elif all(isinstance(op, SetSysctl) for op in ops):
            self._per_namespace(ops, on_done, self._sysctls)
        elif all(isinstance(op, RunCommand) for op in ops):
            for op in ops:
                self._run_command(op)  # type: ignore[arg-type]
                on_done(op)
        elif all(isinstance(op, (CreateIpset, LoadNftables, RestoreIptables)) for op in ops):
            # nft.py: ipsets over netlink and libnftables in a thread inside the namespace,
            # iptables-nft-restore via ip netns exec
            self._per_namespace(ops, on_done, lambda ns, group: nft.apply_in(self._handle(ns).fd, ns, group))
        elif all(isinstance(op, (AddIpvsService, AddIpvsReal)) for op in ops):
            self._per_namespace(ops, on_done, self._ipvs)
        else:
            self._per_namespace(ops, on_done, self._netlink)

    def _run_workers(self, chunks: list[list[str]], work: Callable[[str], None], stop: threading.Event) -> None:
        """Run work(ns) for every namespace, chunks in parallel. Ctrl-C stops the workers
        between namespaces, and we wait for them so the caller's rollback sees all they made."""

        # Fix: wait on our own "finished" events, not Thread.join(). In CPython 3.11 a
        # join() interrupted by Ctrl-C/SIGTERM marks a thread that is still running as
        # stopped (threading._wait_for_tstate_lock, bpo-45274 handling), so is_alive()
        # turned False early and the rollback ran while a worker was still creating
        # namespaces: one namespace of a 300-node lab was left behind after SIGTERM.
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
        nsops.prepare_netns_dir()
        groups: dict[str, list[Op]] = {}
        for op in ops:
            groups.setdefault(op.ns, []).append(op)
        failures: list[OpFailed] = []
        stop = threading.Event()

        # Each worker thread unshares into every namespace of its chunk in turn; the
        # thread ends afterwards, so no thread is ever left in a lab namespace.
        def work(ns: str) -> None:
            for op in groups[ns]:
                try:
                    if isinstance(op, CreateNetns):
                        nsops.create_here(ns)
                        # Fix: report the namespace as made as soon as it exists, so the
                        # rollback deletes it even if opening its socket below fails.
                        on_done(op)
                        handle = _Handle(nsops.open_netns(ns), RtnlSocket())
                        with self._lock:
                            self._handles[ns] = handle
                        continue
                    elif isinstance(op, SetSysctl):
                        _write_sysctl(op.key, op.value)
                    elif isinstance(op, MarkNetns):
                        self._set_lo(ns, op.mark)
                    else:
                        raise TypeError(f"unexpected {type(op).__name__} among namespace ops")
                except (OSError, LookupError, TypeError) as err:
                    failures.append(OpFailed(op, _reason(err)))
                    stop.set()
                    return
                on_done(op)

        self._run_workers(self._chunks(list(groups)), work, stop)
        if failures:
            raise failures[0]

    def _set_lo(self, ns: str, alias: str) -> None:
        msg = ifinfmsg()
        msg["index"] = 1  # lo is always ifindex 1 in a network namespace
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        msg["attrs"] = [("IFLA_IFALIAS", alias)]
        failed = self._handle(ns).sock.request([(msg, RTM_NEWLINK, 0)])
        if failed:
            raise OSError(failed[0].errno, failed[0].message)

    # ------------------------------------------------------------ sysctls, commands

    def _sysctls(self, ns: str, ops: list[Op]) -> list[tuple[Op, str]]:
        def run() -> list[tuple[Op, str]]:
            nsops.enter_here(self._handle(ns).fd)
            failed: list[tuple[Op, str]] = []
            for op in ops:
                assert isinstance(op, SetSysctl)
                try:
                    _write_sysctl(op.key, op.value)
                except OSError as err:
                    failed.append((op, _reason(err)))
            return failed

        return nsops.in_thread(run)

    def _ipvs(self, ns: str, ops: list[Op]) -> list[tuple[Op, str]]:
        """IPVS services and reals over generic netlink, from a thread inside the namespace
        (a generic netlink socket, like any, belongs to the namespace it is opened in)."""
        fd = self._handle(ns).fd

        def run() -> list[tuple[Op, str]]:
            nsops.enter_here(fd)
            return apply_ipvs_here(ops)

        return nsops.in_thread(run)

    def _run_command(self, op: RunCommand) -> None:
        # Fix: subprocess.run() left the command running when Ctrl-C/SIGTERM landed while
        # Popen was still starting it (after the fork, before run() could kill it on
        # error): the rollback removed the lab, and the command ran on in its namespace.
        # The signals now wait until the child is ours, and any exception kills it.
        proc: subprocess.Popen[str] | None = None
        try:
            with _signals_deferred():
                proc = subprocess.Popen(["ip", "netns", "exec", op.ns, *op.argv],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            stdout, stderr = proc.communicate(timeout=300)
        except BaseException as err:
            if proc is not None:
                proc.kill()
                proc.communicate()
            if isinstance(err, (OSError, subprocess.TimeoutExpired)):
                raise OpFailed(op, str(err)) from None
            raise
        if proc.returncode != 0:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            raise OpFailed(op, f"exit status {proc.returncode}" + (": " + " | ".join(tail) if tail else ""))

    # ------------------------------------------------------------ rtnetlink

    def _netlink(self, ns: str, ops: list[Op]) -> list[tuple[Op, str]]:
        msgs: list[tuple[Any, int, int]] = []
        sent: list[Op] = []
        failed: list[tuple[Op, str]] = []
        for op in ops:
            try:
                msgs.append(self._message(op))
                sent.append(op)
            except LookupError as err:
                failed.append((op, str(err)))
        for f in self._handle(ns).sock.request(msgs):
            failed.append((sent[f.index], f.message))
        return failed

    def _message(self, op: Op) -> tuple[Any, int, int]:
        if isinstance(op, CreateLink):
            return self._create_link(op), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL
        if isinstance(op, SetBridgePort):
            msg = ifinfmsg()
            msg["index"] = self._ifindex(op.ns, op.name)
            msg["attrs"] = [("IFLA_LINKINFO", {"attrs": [
                ("IFLA_INFO_SLAVE_KIND", "bridge"),
                ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", int(op.hairpin))]}),
            ]})]
            return msg, RTM_NEWLINK, 0
        if isinstance(op, SetLink):
            msg = ifinfmsg()
            msg["index"] = self._ifindex(op.ns, op.name)
            msg["flags"] = IFF_UP if op.up else 0
            msg["change"] = IFF_UP
            msg["attrs"] = self._common_attrs(op.ns, op.master, op.mtu, op.mac)
            return msg, RTM_NEWLINK, 0
        if isinstance(op, AddAddress):
            iface = ipaddress.ip_interface(op.address)
            msg = ifaddrmsg()
            msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
            msg["prefixlen"] = iface.network.prefixlen
            msg["index"] = self._ifindex(op.ns, op.dev)
            attrs: list[tuple[str, Any]] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
            if iface.version == 6:
                attrs.append(("IFA_FLAGS", IFA_F_NODAD))
            msg["attrs"] = attrs
            return msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL
        if isinstance(op, AddNeighbor):
            return self._neighbor(op), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE
        if isinstance(op, AddFdb):
            return self._fdb(op), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND
        if isinstance(op, AddRoute):
            return self._route(op), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL
        if isinstance(op, AddRule):
            return self._rule(op), RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL
        raise TypeError(f"no netlink message for {type(op).__name__}")

    def _common_attrs(self, ns: str, master: str | None, mtu: int | None, mac: str | None) -> list[tuple[str, Any]]:
        attrs: list[tuple[str, Any]] = []
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        if mac:
            attrs.append(("IFLA_ADDRESS", mac))
        if master:
            attrs.append(("IFLA_MASTER", self._ifindex(ns, master)))
        return attrs

    def _create_link(self, op: CreateLink) -> Any:
        msg = ifinfmsg()
        msg["index"] = 0
        msg["flags"] = IFF_UP if op.up else 0
        msg["change"] = IFF_UP
        attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", op.name)]
        attrs += self._common_attrs(op.ns, op.master, op.mtu, op.mac)
        data: list[tuple[str, Any]] = []
        if op.kind == "veth":
            assert op.peer_ns and op.peer_name
            peer_attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", op.peer_name),
                                                 ("IFLA_NET_NS_FD", self._handle(op.peer_ns).fd)]
            if op.peer_mtu:
                peer_attrs.append(("IFLA_MTU", op.peer_mtu))
            if op.peer_mac:
                peer_attrs.append(("IFLA_ADDRESS", op.peer_mac))
            peer = {"index": 0, "flags": 0, "change": 0, "attrs": peer_attrs}
            data.append(("VETH_INFO_PEER", peer))
        elif op.kind == "bridge":
            data.append(("IFLA_BR_STP_STATE", int(op.stp)))
        elif op.kind == "vrf":
            data.append(("IFLA_VRF_TABLE", op.table))
        elif op.kind == "vxlan":
            data += [("IFLA_VXLAN_ID", op.vni), ("IFLA_VXLAN_PORT", op.port),
                     ("IFLA_VXLAN_LEARNING", int(op.learning))]
            for key, value in (("LOCAL", op.local), ("GROUP", op.group or op.remote)):
                if value:
                    six = ipaddress.ip_address(value).version == 6
                    data.append((f"IFLA_VXLAN_{key}{'6' if six else ''}", value))
            if op.dev:
                data.append(("IFLA_VXLAN_LINK", self._ifindex(op.ns, op.dev)))
            if op.ttl is not None:
                data.append(("IFLA_VXLAN_TTL", op.ttl))
        info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", op.kind)]
        if data:
            info.append(("IFLA_INFO_DATA", {"attrs": data}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
        msg["attrs"] = attrs
        return msg

    def _neighbor(self, op: AddNeighbor) -> Any:
        """`ip neigh replace TO lladdr MAC dev DEV nud permanent`, as iproute2 sends it."""
        msg = ndmsg()
        msg["family"] = socket.AF_INET if ipaddress.ip_address(op.to).version == 4 else socket.AF_INET6
        msg["ifindex"] = self._ifindex(op.ns, op.dev)
        msg["state"] = NUD_PERMANENT
        msg["flags"] = 0
        msg["attrs"] = [("NDA_DST", op.to), ("NDA_LLADDR", op.lladdr)]
        return msg

    def _fdb(self, op: AddFdb) -> Any:
        """`bridge fdb append MAC dev DEV [dst IP] self permanent | master static`. As
        iproute2's bridge/fdb.c builds it: the state starts as NUD_NOARP, `permanent` adds
        NUD_PERMANENT (0xc0), `static` adds NUD_REACHABLE (0x42: the bridge keeps a NOARP,
        non-PERMANENT entry as static, a PERMANENT one as local)."""
        msg = ndmsg()
        msg["family"] = AF_BRIDGE
        msg["ifindex"] = self._ifindex(op.ns, op.dev)
        msg["state"] = NUD_NOARP | (NUD_REACHABLE if op.master else NUD_PERMANENT)
        msg["flags"] = NTF_MASTER if op.master else NTF_SELF
        attrs: list[tuple[str, Any]] = [("NDA_LLADDR", op.lladdr)]
        if op.dst:
            attrs.append(("NDA_DST", op.dst))
        msg["attrs"] = attrs
        return msg

    def _route(self, op: AddRoute) -> Any:
        msg = rtmsg()
        msg["family"] = socket.AF_INET if op.family == 4 else socket.AF_INET6
        table = op.table if op.table is not None else BUILTIN_TABLES["main"]
        msg["table"] = table if table < 256 else 252  # RT_TABLE_COMPAT; the real id goes in RTA_TABLE
        msg["proto"] = RTPROT_STATIC
        msg["type"] = RTN_TYPES[op.type]
        msg["scope"] = RT_SCOPE_LINK if (op.type == "unicast" and not op.via) else RT_SCOPE_UNIVERSE
        msg["flags"] = RTNH_F_ONLINK if op.onlink else 0
        attrs: list[tuple[str, Any]] = [("RTA_TABLE", table)]
        if op.to != "default":
            net = ipaddress.ip_network(op.to)
            msg["dst_len"] = net.prefixlen
            attrs.append(("RTA_DST", str(net.network_address)))
        if op.via:
            attrs.append(("RTA_GATEWAY", op.via))
        if op.dev:
            attrs.append(("RTA_OIF", self._ifindex(op.ns, op.dev)))
        if op.metric is not None:
            attrs.append(("RTA_PRIORITY", op.metric))
        if op.src:
            attrs.append(("RTA_PREFSRC", op.src))
        msg["attrs"] = attrs
        return msg

    def _rule(self, op: AddRule) -> Any:
        msg = fibmsg()
        msg["family"] = socket.AF_INET if op.family == 4 else socket.AF_INET6
        msg["action"] = FR_ACTIONS[op.action]
        attrs: list[tuple[str, Any]] = []
        if op.table is not None:
            msg["table"] = op.table if op.table < 256 else 252
            attrs.append(("FRA_TABLE", op.table))
        if op.priority is not None:
            attrs.append(("FRA_PRIORITY", op.priority))
        for key, value, length in (("FRA_SRC", op.src, "src_len"), ("FRA_DST", op.dst, "dst_len")):
            if value:
                net = ipaddress.ip_network(value)
                msg[length] = net.prefixlen
                attrs.append((key, str(net.network_address)))
        if op.iif:
            attrs.append(("FRA_IIFNAME", op.iif))
        if op.oif:
            attrs.append(("FRA_OIFNAME", op.oif))
        if op.fwmark is not None:
            attrs.append(("FRA_FWMARK", op.fwmark))
            attrs.append(("FRA_FWMASK", op.fwmask if op.fwmask is not None else 0xFFFFFFFF))
        if op.invert:
            msg["flags"] = FIB_RULE_INVERT
        if op.tos is not None:
            msg["tos"] = op.tos
        if op.ipproto is not None:
            attrs.append(("FRA_IP_PROTO", op.ipproto))
        for key, span in (("FRA_SPORT_RANGE", op.sport), ("FRA_DPORT_RANGE", op.dport)):
            if span is not None:
                attrs.append((key, f"{span[0]}:{span[1]}"))  # pyroute2's fra_range takes "start:end"
        if op.uidrange is not None:
            attrs.append(("FRA_UID_RANGE", f"{op.uidrange[0]}:{op.uidrange[1]}"))
        if op.l3mdev:
            attrs.append(("FRA_L3MDEV", 1))
        if op.goto is not None:
            attrs.append(("FRA_GOTO", op.goto))
        if op.suppress_prefixlength is not None:
            attrs.append(("FRA_SUPPRESS_PREFIXLEN", op.suppress_prefixlength))
        msg["attrs"] = attrs
        return msg

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
                    sock = RtnlSocket()
                    try:
                        links = sock.dump(ifinfmsg(), RTM_GETLINK)
                    finally:
                        sock.close()
                    lo = [m for m in links if m["index"] == 1]
                    out[name] = parse_mark(lo[0].get_attr("IFLA_IFALIAS")) if lo else None
                except OSError:
                    out[name] = None  # e.g. a stale file that is no longer a namespace mount
                finally:
                    os.close(fd)
            return out

        return nsops.in_thread(read)

    def observe(self, name: str) -> NamespaceView:
        sock = self._handle(name).sock
        links = sock.dump(ifinfmsg(), RTM_GETLINK)
        addrs = sock.dump(ifaddrmsg(), RTM_GETADDR)
        by_index: dict[int, list[AddressView]] = {}
        for a in addrs:
            ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            fam = 4 if a["family"] == socket.AF_INET else 6
            by_index.setdefault(a["index"], []).append(AddressView(f"{ip}/{a['prefixlen']}", fam))
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
        views = []
        for m in links:
            info = m.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else ""
            data = info.get_attr("IFLA_INFO_DATA") if info and kind == "vrf" else None
            master = m.get_attr("IFLA_MASTER")
            views.append(LinkView(
                name=m.get_attr("IFLA_IFNAME"), index=m["index"], kind=kind or "",
                up=bool(m["flags"] & IFF_UP), oper=str(m.get_attr("IFLA_OPERSTATE") or "unknown").lower(),
                mtu=int(m.get_attr("IFLA_MTU") or 0), mac=str(m.get_attr("IFLA_ADDRESS") or ""),
                master=names.get(master) if master else None, alias=m.get_attr("IFLA_IFALIAS"),
                addresses=tuple(by_index.get(m["index"], [])),
                table=data.get_attr("IFLA_VRF_TABLE") if data is not None else None,
            ))
        return NamespaceView(name, tuple(views))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Let Ctrl-C / SIGTERM take effect only when the block is done. At the Python level
    (not with a signal mask, which a child would inherit through exec); signal handlers
    run in the main thread only, so elsewhere there is nothing to defer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append((signum, frame))

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for signum, frame in caught[:1]:
            handler = old[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)  # raises KeyboardInterrupt, or the CLI's Terminated
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def _sysctl_path(key: str) -> str:
    # sysctl(8) convention: with a '/', '/' separates and '.' is literal (net/ipv4/conf/flannel.1/rp_filter)
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def _write_sysctl(key: str, value: str) -> None:
    try:
        with open(_sysctl_path(key), "w") as f:
            f.write(value)
    except FileNotFoundError:
        if _sysctl_path(key).startswith("/proc/sys/net/ipv4/vs/"):
            raise FileNotFoundError(
                2, f"no sysctl {key} in this namespace: the IPVS sysctls exist only on a kernel with ip_vs "
                   "loaded (a lab with `ipvs:` objects or net.ipv4.vs.* sysctls gets it checked before `up`)"
            ) from None
        raise FileNotFoundError(
            2, f"no sysctl {key} in this namespace (for interface names with a dot write "
               f"slashes, e.g. net/ipv4/conf/flannel.1/rp_filter)"
        ) from None


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror if not err.filename else f"{err.strerror}: {err.filename}"
    return str(err)
