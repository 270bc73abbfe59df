"""Kubernetes names as probe targets, turned into the address and port they stand for.

A probe check of a lab with `cluster:` may go to

    to: svc/NAMESPACE/NAME[:PORT|:PORTNAME]      # the Service's cluster IP (svc/NAME: namespace default)
    to: nodeport/NODE/NAMESPACE/NAME[:PORT|:PORTNAME]   # NODE's underlay address, the port's node port
    service: NAMESPACE/NAME   (+ port: 80 | http)     # the long form of svc/…
    pod: NAMESPACE/NAME                               # the pod (NAME alone: in any namespace)

The expansion writes each as a plain `to:` (an address, or the pod's node name) and a
numeric `port:` (and `proto: udp` for a UDP port), so the explicit lab `netlab render`
prints says where the probe goes. A name that does not resolve is a complaint at the
check's key that lists the known services or pods, closest first.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from typing import Any

from netlab.expand.services import ServicePortView
from netlab.lab.checks import Probe, ProbeCheck
from netlab.lab.model import Check, Lab
from netlab.lab.policy import DEFAULT_NAMESPACE
from netlab.lab.source import Complaint

SERVICE_PREFIX, NODEPORT_PREFIX = "svc/", "nodeport/"


class _Unresolved(ValueError):
    """Why a Kubernetes name is no target; the message says what would be."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def names_kubernetes(probe: Probe) -> bool:
    """Does the probe go to a Kubernetes name (which only a cluster resolves)?"""
    return (
        probe.service is not None
        or probe.pod is not None
        or (probe.to is not None and probe.to.startswith((SERVICE_PREFIX, NODEPORT_PREFIX)))
    )


def without_cluster(lab: Lab) -> Iterator[Complaint]:
    """A lab without `cluster:` has no services or pods to name."""
    for i, check in enumerate(lab.checks):
        if isinstance(check, ProbeCheck) and names_kubernetes(check.probe):
            key = "service" if check.probe.service else "pod" if check.probe.pod else "to"
            yield (
                ("checks", i, "probe", key),
                "names a Kubernetes service or pod, but this lab has no `cluster:` to find it in; "
                "give an address or a node",
            )


def resolve_targets(
    checks: Sequence[Check],
    services: Sequence[ServicePortView],
    pods: dict[str, str],
    node_addresses: dict[str, str],
    complaints: list[Complaint],
) -> list[Check]:
    """The checks with every Kubernetes name resolved. pods: pod → its namespace;
    node_addresses: cluster node → its underlay address."""
    out: list[Check] = []
    for i, check in enumerate(checks):
        if not (isinstance(check, ProbeCheck) and names_kubernetes(check.probe)):
            out.append(check)
            continue
        try:
            update = _resolve(check.probe, services, pods, node_addresses)
        except _Unresolved as err:
            complaints.append((("checks", i, "probe", err.key), str(err)))
            out.append(check)
            continue
        data = check.probe.model_dump(by_alias=True, exclude_unset=True, exclude={"service", "pod"})
        probe = Probe.model_validate({**data, **update})
        out.append(check.model_copy(update={"probe": probe}))
    return out


def _resolve(
    probe: Probe, services: Sequence[ServicePortView], pods: dict[str, str], node_addresses: dict[str, str]
) -> dict[str, Any]:
    given = [k for k in ("to", "service", "pod") if getattr(probe, k) is not None]
    if len(given) > 1:
        raise _Unresolved(given[1], f"a probe goes to one place: give one of {', '.join(given)}")
    if probe.pod is not None:
        return {"to": _pod(probe.pod, pods)}
    node = None
    if probe.service is not None:
        ref, port = probe.service, probe.port
    else:
        assert probe.to is not None
        ref, node, port = _parse_to(probe.to, probe.port, node_addresses)
    sp = _service_port(ref, port, services, "service" if probe.service is not None else "to")
    update: dict[str, Any] = {"to": sp.cluster_ip, "port": sp.port}
    if node is not None:
        if sp.node_port is None:
            raise _Unresolved("to", f"service {sp.name} is of type ClusterIP: it has no node port; use `svc/…`")
        update = {"to": node_addresses[node], "port": sp.node_port}
    if sp.protocol == "udp" and probe.proto is None:
        update["proto"] = "udp"
    elif probe.proto is not None and (probe.proto == "udp") != (sp.protocol == "udp"):
        raise _Unresolved(
            "proto", f"{sp.name} is a {sp.protocol.upper()} port; a {probe.proto} probe gets no answer there"
        )
    return update


def _parse_to(
    to: str, port: int | str | None, node_addresses: dict[str, str]
) -> tuple[str, str | None, int | str | None]:
    """`svc/NS/NAME[:PORT]` or `nodeport/NODE/NS/NAME[:PORT]` → (NS/NAME, NODE, port)."""
    rest = to.removeprefix(SERVICE_PREFIX)
    node = None
    if to.startswith(NODEPORT_PREFIX):
        node, _, rest = to.removeprefix(NODEPORT_PREFIX).partition("/")
        if node not in node_addresses:
            raise _Unresolved(
                "to", f"no cluster node {node!r}{_closest(node, sorted(node_addresses), 'cluster nodes')}"
            )
    ref, sep, named = rest.partition(":")
    if sep:
        if port is not None and str(port) != named:
            raise _Unresolved("to", f"`to: {to}` and `port: {port}` name different ports; give the port once")
        port = int(named) if named.isdigit() else named
    return ref, node, port


def _service_port(ref: str, port: int | str | None, services: Sequence[ServicePortView], key: str) -> ServicePortView:
    namespace, _, name = ref.rpartition("/")
    namespace = namespace or DEFAULT_NAMESPACE
    ports = [sp for sp in services if (sp.namespace, sp.service) == (namespace, name)]
    if not ports:
        known = sorted({f"{sp.namespace}/{sp.service}" for sp in services})
        wanted = f"{namespace}/{name}"
        # the same name in another namespace is the likeliest meaning
        elsewhere = [k for k in known if k.endswith(f"/{name}")]
        raise _Unresolved(key, f"no service {wanted} in the cluster{_closest(wanted, known, 'services', elsewhere)}")
    if port is None:
        if len(ports) == 1:
            return ports[0]
        raise _Unresolved(key, f"service {namespace}/{name} has {_ports_words(ports)}: say which with `port:`")
    found = [sp for sp in ports if port in (sp.port, sp.port_name)]
    if not found:
        raise _Unresolved(
            "port" if key == "service" else key,
            f"service {namespace}/{name} has no port {port!r}; it has {_ports_words(ports)}",
        )
    return found[0]


def _ports_words(ports: Sequence[ServicePortView]) -> str:
    words = [
        (f"{sp.port_name} ({sp.port}/{sp.protocol})" if sp.port_name else f"{sp.port}/{sp.protocol}") for sp in ports
    ]
    return ("port " if len(words) == 1 else "ports ") + ", ".join(words)


def _pod(ref: str, pods: dict[str, str]) -> str:
    namespace, _, name = ref.rpartition("/")
    if name in pods and namespace in ("", pods[name]):
        return name
    if name in pods:
        raise _Unresolved("pod", f"pod {name} is in namespace {pods[name]}, not {namespace}")
    known = sorted(f"{ns}/{pod}" for pod, ns in pods.items())
    wanted = ref if "/" in ref else f"{DEFAULT_NAMESPACE}/{ref}"
    raise _Unresolved("pod", f"no pod {ref} in the cluster{_closest(wanted, known, 'pods')}")


def _closest(name: str, known: list[str], what: str, likeliest: Sequence[str] = ()) -> str:
    close = list(likeliest) or difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
    if close:
        return f"; did you mean {close[0]!r}? ({what}: {shown})"
    return f" ({what}: {shown or 'none'})"
