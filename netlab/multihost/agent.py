"""The host's side of a check across hosts: `netlab host-agent`, run over ssh by the
coordinator, answers calls (netlab.multihost.calls) on this host's kernel until its stdin
closes.

One agent per host for a whole `check`, not one ssh command per probe: netlab's start-up
(pydantic, pyroute2) costs a few tenths of a second, a hundred checks would pay it a
hundred times. Calls are answered side by side (a probe waits for its timeout while
others go on), each reply as soon as it is ready, tagged with its request's id. When
stdin closes — the coordinator is done, interrupted or gone — the calls still running
finish and every capture still open is closed.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import IO, Any

from netlab.kernel import nft, tracefs
from netlab.kernel.inside import in_namespace
from netlab.kernel.observe import LiveObserver
from netlab.kernel.observer import OpenCapture
from netlab.kernel.trace import TraceSession, each, links_here
from netlab.multihost.calls import CALLS, CaptureRead, HostLab, ProbesSeen, decode_args, encode
from netlab.observations import KernelSeen, ObserveError, TraceEvent, TraceFlow
from netlab.probes.flow import ProbeRequest, ProbeResult, probe_many
from netlab.probes.responders import ResponderHealth, health
from netlab.state import read_state, responder_log_path

WORKERS = 64  # calls at once: the checks a coordinator runs side by side, and their captures


@dataclass
class DropsOpen:
    watch: tracefs.DropWatch
    namespaces: list[str]
    addresses: list[str]


def _links(ns: str) -> dict[int, Any]:
    try:
        return in_namespace(ns, links_here)
    except OSError:  # gone meanwhile: none of its interfaces is the lab's any more
        return {}


def of_lab(seen: KernelSeen, names: set[str], addresses: set[str]) -> KernelSeen:
    """What an every-task watch recorded of the lab: the drops of packets that came in by
    one of its interfaces (by name: the host's own interfaces of the same name may add
    theirs) and the FIB lookups of its addresses."""
    if seen.unavailable is not None:
        return seen
    drops = tuple(d for d in seen.drops if d.dev in names)
    lookups = tuple(f for f in seen.lookups if f.dst in addresses or f.src in addresses)
    return replace(seen, drops=drops, lookups=lookups)


class Agent:
    def __init__(self) -> None:
        self.observer = LiveObserver()
        self.captures: dict[int, OpenCapture] = {}
        self.traces: dict[int, TraceSession] = {}
        self.watches: dict[int, DropsOpen] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.handlers: dict[str, Callable[..., Any]] = {
            "lab": self.lab,
            "route_get": self.observer.route_get,
            "rules": self.observer.rules,
            "conntrack": self.observer.conntrack,
            "neighbours": self.observer.neighbours,
            "ipvs": self.observer.ipvs,
            "nft_list": self.observer.nft_list,
            "counters": self.observer.counters,
            "drops": self.observer.drops,
            "capture": self.capture,
            "capture_read": self.capture_read,
            "capture_close": self.capture_close,
            "trace_open": self.trace_open,
            "trace_close": self.trace_close,
            "probe": lambda requests, workers: probe_many(requests, workers=workers),
            "probe_watched": self.probe_watched,
            "drops_open": self.drops_open,
            "drops_close": self.drops_close,
            "responders": self.responders,
        }
        assert set(self.handlers) == set(CALLS)

    def lab(self, lab: str) -> HostLab | None:
        st = read_state(lab)
        return None if st is None else HostLab(st.status, st.fingerprint)

    def responders(self, lab: str) -> list[ResponderHealth]:
        st = read_state(lab)
        return [] if st is None else health(st.pids, responder_log_path(lab))

    def probe_watched(self, requests: list[ProbeRequest], workers: int) -> ProbesSeen:
        results: list[ProbeResult]
        results, seen = tracefs.watch_drops(lambda: probe_many(requests, workers=workers))
        return ProbesSeen(results, seen)

    def drops_open(self, namespaces: list[str], addresses: list[str]) -> int:
        watch = tracefs.DropWatch(every_task=True)
        watch.open()
        with self._lock:
            key = next(self._ids)
            self.watches[key] = DropsOpen(watch, namespaces, addresses)
        return key

    def drops_close(self, drops: int) -> KernelSeen:
        with self._lock:
            found = self.watches.pop(drops, None)
        if found is None:
            raise ObserveError(f"no drop watch {drops} is open on this host")
        seen = found.watch.close()
        names = {link.name for ns in each(found.namespaces, _links) for link in ns.values()}
        return of_lab(seen, names, set(found.addresses))

    def capture(self, **args: Any) -> int:
        opened = self.observer.capture(**args)
        with self._lock:
            key = next(self._ids)
            self.captures[key] = opened
        return key

    def capture_read(self, capture: int) -> CaptureRead:
        opened = self._capture(capture)
        kept = len(opened.frames)
        packets = opened.packets()
        return CaptureRead(packets, opened.frames[kept:])

    def capture_close(self, capture: int) -> None:
        with self._lock:
            opened = self.captures.pop(capture, None)
        if opened is not None:
            opened.close()

    def trace_open(self, namespaces: list[str], flow: TraceFlow) -> int:
        session = TraceSession(namespaces, flow)
        try:
            session.open()
        except nft.FirewallError as e:
            session.close()
            raise ObserveError(f"nft trace: {e}") from e
        except BaseException:
            session.close()
            raise
        with self._lock:
            key = next(self._ids)
            self.traces[key] = session
        return key

    def trace_close(self, trace: int, settle: float) -> list[list[TraceEvent]]:
        with self._lock:
            session = self.traces.pop(trace, None)
        if session is None:
            raise ObserveError(f"no trace {trace} is open on this host")
        try:
            session.collect(settle)
        finally:
            session.close()
        return session.queues()

    def _capture(self, key: int) -> OpenCapture:
        with self._lock:
            opened = self.captures.get(key)
        if opened is None:
            raise ObserveError(f"no capture {key} is open on this host")
        return opened

    def answer(self, line: str) -> dict[str, Any]:
        """The reply to one request line."""
        try:
            request = json.loads(line)
            ident, call = request["id"], request["call"]
        except (ValueError, KeyError, TypeError) as e:
            return {"id": None, "error": f"not a request: {e}"}
        try:
            if call not in CALLS:
                raise ValueError(f"no call {call!r}")
            value = self.handlers[call](**decode_args(call, request.get("args", {})))
            return {"id": ident, "value": encode(CALLS[call].result, value)}
        except (ObserveError, OSError, ValueError) as e:
            return {"id": ident, "error": str(e)}
        except Exception as e:  # any other failure is said to the coordinator, which names the host
            return {"id": ident, "error": f"{type(e).__name__}: {e}"}

    def close(self) -> None:
        for key in list(self.captures):
            self.capture_close(key)
        with self._lock:
            watches, self.watches = list(self.watches.values()), {}
        for found in watches:
            found.watch.close(read=False)
        with self._lock:
            traces, self.traces = list(self.traces.values()), {}
        for session in traces:
            session.close()


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer each request line of `requests` on `replies` until `requests` ends."""
    agent = Agent()
    written = threading.Lock()

    def one(line: str) -> None:
        reply = json.dumps(agent.answer(line))
        with written:
            replies.write(reply + "\n")
            replies.flush()

    try:
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="netlab-agent") as pool:
            for line in requests:
                if line.strip():
                    pool.submit(one, line)
    finally:
        agent.close()
