"""What the coordinator asks a host's agent (`netlab host-agent`), and how it travels.

One JSON document per line each way. A request `{"id": 7, "call": "conntrack", "args":
{"ns": "lab.node1"}}` names a call of CALLS; the reply `{"id": 7, "value": …}` carries the
call's result, or `{"id": 7, "error": "…"}` what went wrong (an ObserveError's words). The
values are netlab.observations' and netlab.probes.flow's own dataclasses, turned into
JSON and back by pydantic from their type hints, so no field is written out twice; bytes
(a frame, a probe's payload) travel as base64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from netlab.observations import (
    CounterView,
    CtEntry,
    Drop,
    IpvsState,
    KernelSeen,
    NeighView,
    Packet,
    RouteAnswer,
    RouteQuery,
    RuleView,
    TraceEvent,
    TraceFlow,
)
from netlab.pcap import Frame
from netlab.probes.flow import ProbeRequest, ProbeResult
from netlab.probes.responders import ResponderHealth


@dataclass(frozen=True)
class Call:
    args: Mapping[str, Any]  # name → type
    result: Any  # type


@dataclass(frozen=True)
class CaptureRead:
    """What a capture saw since it was last read (frames: only with keep_frames)."""

    packets: list[Packet]
    frames: list[Frame]


@dataclass(frozen=True)
class HostLab:
    """What a host has of a lab: its state's status and the fingerprint of what it built."""

    status: str
    fingerprint: str


@dataclass(frozen=True)
class ProbesSeen:
    """Probes sent with the kernel's drops and FIB lookups of the sending threads recorded."""

    results: list[ProbeResult]
    kernel: KernelSeen


CALLS: dict[str, Call] = {
    "lab": Call({"lab": str}, HostLab | None),
    "route_get": Call({"ns": str, "queries": Sequence[RouteQuery]}, list[RouteAnswer]),
    "rules": Call({"ns": str}, list[RuleView]),
    "conntrack": Call({"ns": str}, list[CtEntry]),
    "neighbours": Call({"ns": str}, list[NeighView]),
    "ipvs": Call({"ns": str}, IpvsState),
    "nft_list": Call({"ns": str, "what": str}, str | None),
    "counters": Call({"ns": str, "iptables": bool}, list[CounterView]),
    "drops": Call({"ns": str, "node": str, "rules": Mapping[int, str]}, list[Drop]),
    # a capture is open (its socket bound) when `capture` answers: the probes may go
    "capture": Call({"ns": str, "ifname": str, "vxlan_ports": Sequence[int], "keep_frames": bool}, int),
    "capture_read": Call({"capture": int}, CaptureRead),
    "capture_close": Call({"capture": int}, None),
    # a trace's tables and listeners are in when `trace_open` answers: the probe may go;
    # `trace_close` reads until the host's namespaces are quiet, removes them, and answers
    # each namespace's events (in the order given) for the coordinator to stitch
    "trace_open": Call({"namespaces": Sequence[str], "flow": TraceFlow}, int),
    "trace_close": Call({"trace": int, "settle": float}, list[list[TraceEvent]]),
    "probe": Call({"requests": Sequence[ProbeRequest], "workers": int}, list[ProbeResult]),
    # the probes sent while the kernel's drop and FIB tracepoints record the agent's threads
    # (the client's host of a trace: the packets' way there runs in the sending thread)
    "probe_watched": Call({"requests": Sequence[ProbeRequest], "workers": int}, ProbesSeen),
    # every task's drops and lookups from `drops_open` to `drops_close` (a host the packets
    # reach over the wire, where a softirq handles them in whatever task it interrupted),
    # kept when they are of the lab's interfaces in `namespaces` and of `addresses`
    "drops_open": Call({"namespaces": Sequence[str], "addresses": Sequence[str]}, int),
    "drops_close": Call({"drops": int}, KernelSeen),
    "responders": Call({"lab": str}, list[ResponderHealth]),
}

_BYTES_AS_BASE64 = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


@cache
def _adapter(kind: Any) -> TypeAdapter[dict[str, Any]]:
    # wrapped in a dict: pydantic takes a config only for a container of dataclasses
    return TypeAdapter(dict[str, kind], config=_BYTES_AS_BASE64)


def encode(kind: Any, value: Any) -> Any:
    """value (of type kind) as plain JSON data."""
    return _adapter(kind).dump_python({"v": value}, mode="json")["v"]


def decode(kind: Any, data: Any) -> Any:
    """JSON data back into a value of type kind; ValueError if it is not one."""
    return _adapter(kind).validate_python({"v": data})["v"]


def encode_args(call: str, args: Mapping[str, Any]) -> dict[str, Any]:
    kinds = CALLS[call].args
    return {name: encode(kinds[name], value) for name, value in args.items()}


def decode_args(call: str, data: Mapping[str, Any]) -> dict[str, Any]:
    kinds = CALLS[call].args
    if set(data) != set(kinds):
        raise ValueError(f"call {call} takes {', '.join(kinds)}, got {', '.join(data) or 'nothing'}")
    return {name: decode(kinds[name], value) for name, value in data.items()}
