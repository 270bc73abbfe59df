"""The coordinator's side of a check across hosts: a KernelObserver and a probe sender
that run each read and each probe on the host of the namespace it names, through that
host's agent (netlab.multihost.agent, one ssh session per host for the whole check).

The check runner (netlab.probes.checks) is the local one, unchanged: it keeps the lab,
the schedule and the judges, and sees the hosts' kernels through this observer. A
capture on a far host is open when its `capture` call answers, before the probe goes:
the handshake a local capture makes by returning from open().
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from netlab.kernel.trace import walk
from netlab.multihost.calls import CALLS, CaptureRead, ProbesSeen, decode, encode_args
from netlab.multihost.early import Spawned, spawn_agent
from netlab.multihost.inventory import Host
from netlab.multihost.ssh import Ssh, on_each
from netlab.observations import (
    TRACE_SETTLE,
    CounterView,
    CtEntry,
    Drop,
    IpvsState,
    KernelSeen,
    NeighView,
    ObserveError,
    Packet,
    RouteAnswer,
    RouteQuery,
    RuleView,
    TraceEvent,
    TraceFlow,
)
from netlab.pcap import Frame
from netlab.probes.flow import ProbeRequest, ProbeResult

T = TypeVar("T")


class HostAgent:
    """`netlab host-agent` on one host, over ssh: calls in, replies out, matched by id."""

    def __init__(self, ssh: Ssh, host: Host, spawned: Spawned | None = None) -> None:
        self.host = host.name
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._ended = ""  # why the agent is gone, once it is
        self._spawned = spawned or spawn_agent(ssh, host)  # started already (netlab.multihost.early), or now
        self._process, self._stderr = self._spawned.process, self._spawned.stderr
        self._reader = threading.Thread(target=self._read, name=f"netlab-agent-{host.name}", daemon=True)
        self._reader.start()

    def call(self, name: str, **args: Any) -> Any:
        """The call's result; ObserveError (naming the host) if it failed there or the agent is gone."""
        encoded = encode_args(name, args)
        future: Future[Any] = Future()
        with self._lock:
            if self._ended:
                raise ObserveError(f"host {self.host}: {self._ended}")
            ident = next(self._ids)
            self._pending[ident] = future
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps({"id": ident, "call": name, "args": encoded}) + "\n")
                self._process.stdin.flush()
            except OSError:
                pass  # the reader sees the agent end and fails every pending call
        reply = future.result()
        if "error" in reply:
            raise ObserveError(f"host {self.host}: {reply['error']}")
        try:
            return decode(CALLS[name].result, reply.get("value"))
        except ValueError as e:
            raise ObserveError(f"host {self.host}: a reply to {name} that is not one: {e}") from None

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                reply = json.loads(line)
                with self._lock:
                    future = self._pending.pop(reply["id"], None)
            except (ValueError, KeyError, TypeError):
                continue  # not a reply (a line a login script printed): ignored
            if future is not None:
                future.set_result(reply)
        code = self._process.wait()
        with self._lock:
            self._ended = f"the connection ended ({self._last_words(code)})"
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_result({"error": self._ended})

    def _last_words(self, code: int) -> str:
        self._stderr.seek(0)
        lines = [x for x in self._stderr.read().decode(errors="replace").splitlines() if x.strip()]
        return lines[-1].removeprefix("netlab: ") if lines else f"exit code {code}"

    def close(self) -> None:
        """Close its stdin: the agent closes its captures and ends."""
        self._spawned.end()
        self._reader.join(timeout=10)  # before its stdout is closed under it
        self._spawned.close()


class HostAgents:
    """One agent per host, started together; closed together (also on failure)."""

    def __init__(self, ssh: Ssh, hosts: Sequence[Host], started: Mapping[str, Spawned] | None = None) -> None:
        self.agents: dict[str, HostAgent] = {}
        try:
            for host in hosts:
                self.agents[host.name] = HostAgent(ssh, host, (started or {}).get(host.name))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> HostAgents:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def on(self, host: str) -> HostAgent:
        return self.agents[host]

    def close(self) -> None:
        on_each(self.agents.values(), HostAgent.close)


class RemoteCapture:
    """A capture open on a host's agent."""

    def __init__(self, agent: HostAgent, key: int) -> None:
        self.agent, self.key = agent, key
        self.frames: list[Frame] = []

    def packets(self) -> list[Packet]:
        read: CaptureRead = self.agent.call("capture_read", capture=self.key)
        self.frames.extend(read.frames)
        return read.packets

    def close(self) -> None:
        with contextlib.suppress(ObserveError):  # the agent is gone, and its captures with it
            self.agent.call("capture_close", capture=self.key)


class RemoteObserver:
    """KernelObserver over the hosts: each namespace's reads on its host's agent."""

    def __init__(self, agents: HostAgents, host_of: Mapping[str, str]) -> None:
        self.agents = agents
        self.host_of = host_of  # namespace → host
        self._tracing: tuple[TraceFlow, str] | None = None  # within trace(): its flow and client's host
        self._sent: dict[str, KernelSeen] | None = None  # within watch_drops(): what each sending host saw

    def _host(self, ns: str) -> str:
        host = self.host_of.get(ns)
        if host is None:
            raise ObserveError(f"namespace {ns} is on none of the lab's hosts")
        return host

    def _on(self, ns: str) -> HostAgent:
        return self.agents.on(self._host(ns))

    def route_get(self, ns: str, queries: Sequence[RouteQuery]) -> list[RouteAnswer]:
        answers: list[RouteAnswer] = self._on(ns).call("route_get", ns=ns, queries=queries)
        return answers

    def rules(self, ns: str) -> list[RuleView]:
        found: list[RuleView] = self._on(ns).call("rules", ns=ns)
        return found

    def conntrack(self, ns: str) -> list[CtEntry]:
        entries: list[CtEntry] = self._on(ns).call("conntrack", ns=ns)
        return entries

    def neighbours(self, ns: str) -> list[NeighView]:
        found: list[NeighView] = self._on(ns).call("neighbours", ns=ns)
        return found

    def ipvs(self, ns: str) -> IpvsState:
        state: IpvsState = self._on(ns).call("ipvs", ns=ns)
        return state

    def nft_list(self, ns: str, what: str) -> str | None:
        text: str | None = self._on(ns).call("nft_list", ns=ns, what=what)
        return text

    def counters(self, ns: str, *, iptables: bool = False) -> list[CounterView]:
        found: list[CounterView] = self._on(ns).call("counters", ns=ns, iptables=iptables)
        return found

    def capture(
        self, ns: str, ifname: str, *, vxlan_ports: Collection[int] = (4789, 8472), keep_frames: bool = False
    ) -> RemoteCapture:
        agent = self._on(ns)
        key = agent.call("capture", ns=ns, ifname=ifname, vxlan_ports=vxlan_ports, keep_frames=keep_frames)
        return RemoteCapture(agent, key)

    def drops(self, ns: str, node: str, rules: Mapping[int, str]) -> list[Drop]:
        found: list[Drop] = self._on(ns).call("drops", ns=ns, node=node, rules=rules)
        return found

    def trace(
        self, namespaces: Sequence[str], flow: TraceFlow, send: Callable[[], T], *, settle: float = TRACE_SETTLE
    ) -> tuple[T, list[TraceEvent]]:
        """send() with the flow traced in every namespace, each on its host: every host's
        tables and listeners are in before the probe goes; each host then reads until its
        namespaces are quiet, and the queues are stitched here (by the headers each hop
        left and arrived with, as on one machine: no clock is shared between hosts)."""
        by_host: dict[str, list[str]] = {}
        for ns in namespaces:  # the client's host first, its namespaces in the order given
            by_host.setdefault(self._host(ns), []).append(ns)
        hosts = list(by_host)
        opened: dict[str, int] = {}

        def open_on(host: str) -> None:
            opened[host] = self.agents.on(host).call("trace_open", namespaces=by_host[host], flow=flow)

        try:
            on_each(hosts, open_on)  # every host's call ends before a failure is raised
            self._tracing = (flow, hosts[0])
            try:
                result = send()
            finally:
                self._tracing = None
            queues = dict(zip(hosts, on_each(hosts, lambda h: self._close(h, opened.pop(h), settle)), strict=True))
        finally:
            for host, key in opened.items():  # opened, not read: the probe or another host failed
                with contextlib.suppress(ObserveError):
                    self.agents.on(host).call("trace_close", trace=key, settle=0.0)
        ordered = {ns: q for host in hosts for ns, q in zip(by_host[host], queues[host], strict=True)}
        return result, walk([ordered[ns] for ns in namespaces])

    def _close(self, host: str, key: int, settle: float) -> list[list[TraceEvent]]:
        found: list[list[TraceEvent]] = self.agents.on(host).call("trace_close", trace=key, settle=settle)
        return found

    def watch_drops(self, send: Callable[[], T]) -> tuple[T, KernelSeen]:
        """send() with the kernel's drops and FIB lookups recorded on every host of the lab:
        on a host that sends probes, of its agent's threads (as on one machine); on the
        others, of every task while the probes are out (the packets arrive there over the
        wire, handled in whatever task the network's softirq interrupted), kept when they
        are of the lab's interfaces there. Merged in that order: the client's host first."""
        flow, client = self._tracing or (None, None)
        far = [h for h in dict.fromkeys(self.host_of.values()) if h != client]
        by_host = {h: [ns for ns, at in self.host_of.items() if at == h] for h in far}
        addresses = list(flow.addresses) if flow else []
        opened: dict[str, int] = {}
        failed: dict[str, KernelSeen] = {}

        def open_on(host: str) -> None:
            try:
                opened[host] = self.agents.on(host).call("drops_open", namespaces=by_host[host], addresses=addresses)
            except ObserveError as e:
                failed[host] = KernelSeen(unavailable=str(e))

        def close_on(host: str) -> KernelSeen:
            try:
                seen: KernelSeen = self.agents.on(host).call("drops_close", drops=opened[host])
            except ObserveError as e:
                return KernelSeen(unavailable=str(e))
            return seen

        on_each(far, open_on)
        self._sent = {}
        try:
            result = send()
        finally:
            sent, self._sent = self._sent, None
            read = dict(zip(opened, on_each(list(opened), close_on), strict=True))
        return result, merge_seen({**sent, **{h: s for h, s in {**failed, **read}.items() if h not in sent}})

    def send_probes(self, requests: Sequence[ProbeRequest], *, workers: int) -> list[ProbeResult]:
        """Each probe sent by its client's host (SendProbes); results in request order."""
        by_host: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_host.setdefault(self.host_of.get(r.ns, ""), []).append(i)
        if "" in by_host:
            raise ObserveError(f"namespace {requests[by_host[''][0]].ns} is on none of the lab's hosts")
        hosts = list(by_host)
        answers = on_each(hosts, lambda h: self._probe(h, [requests[i] for i in by_host[h]], workers))
        results: dict[int, ProbeResult] = {}
        for host, found in zip(hosts, answers, strict=True):
            results.update(zip(by_host[host], found, strict=True))
        return [results[i] for i in range(len(requests))]

    def _probe(self, host: str, requests: list[ProbeRequest], workers: int) -> list[ProbeResult]:
        if self._sent is None:
            found: list[ProbeResult] = self.agents.on(host).call("probe", requests=requests, workers=workers)
            return found
        seen: ProbesSeen = self.agents.on(host).call("probe_watched", requests=requests, workers=workers)
        self._sent[host] = seen.kernel
        return seen.results


def merge_seen(seen: Mapping[str, KernelSeen]) -> KernelSeen:
    """The hosts' drops and lookups as one, in the hosts' order, each once (simulated hosts
    share a kernel: a packet's drop there can be recorded by two hosts); unavailable only
    when no host could record."""
    usable = [s for s in seen.values() if s.unavailable is None]
    if not usable:
        return KernelSeen(unavailable="; ".join(f"host {h}: {s.unavailable}" for h, s in seen.items()) or None)
    drops = tuple(dict.fromkeys(d for s in usable for d in s.drops))
    lookups = tuple(dict.fromkeys(f for s in usable for f in s.lookups))
    return KernelSeen(drops, lookups)
