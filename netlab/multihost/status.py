"""`netlab status --hosts`: each host's part of a lab, as that host's own `netlab status
--json` shows it, merged into one view of the lab with the host of each node.

A host that cannot be reached, or that has no part of the lab, is named with why; its
nodes show as missing. The lab is `up` when every host's part is, else `partial`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from netlab.kernel.driver import NamespaceView
from netlab.multihost.checks import OverHosts
from netlab.multihost.lifecycle import load_split
from netlab.multihost.ssh import Reply, Ssh, as_root, on_each
from netlab.probes.responders import ResponderHealth
from netlab.status import LabStatus


@dataclass(frozen=True)
class LabOverHosts:
    lab: LabStatus  # the whole lab: every node, each host's links and responders
    host_of: dict[str, str]  # node → host
    problems: dict[str, str] = field(default_factory=dict)  # host → why its part is missing
    responders: dict[str, list[ResponderHealth]] = field(default_factory=dict)  # host → its responders (its PIDs)


def status(where: OverHosts) -> LabOverHosts:
    inventory, split = load_split(where.source, where.variant, where.inventory)
    name = split.lab.name
    hosts = [inventory.host(h) for h in split.sub_labs]
    with Ssh() as ssh:
        replies = on_each(hosts, lambda h: ssh.run(h, as_root([h.netlab, "status", name, "--json"]), timeout=120))
    host_of = dict(split.placement.of_node)
    nodes: dict[str, NamespaceView | None] = dict.fromkeys(split.lab.nodes)
    responders: dict[str, list[ResponderHealth]] = {}
    routes: dict[str, int] = {}  # node → its routes, as its host counted them
    served: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    created: list[str] = []
    for reply in replies:
        part, why = _part(reply)
        if part is None:
            problems[reply.host] = why
            continue
        nodes.update((n, v) for n, v in part.nodes.items() if n in nodes)
        routes.update((n, count) for n, count in part.routes.items() if n in nodes)
        served.update((n, ports) for n, ports in part.served.items() if n in nodes)
        responders[reply.host] = part.responders
        created += [part.created] if part.created else []
        dead = [r for r in part.responders if not r.running]
        if part.status != "up":
            problems[reply.host] = f"its part is {part.status}"
        elif dead:
            problems[reply.host] = (
                f"{len(dead)} of its {len(part.responders)} responder processes "
                f"{'is' if len(dead) == 1 else 'are'} dead: nothing answers on the ports its nodes serve; "
                f"`netlab down {name} && netlab up --hosts {where.inventory} {where.source}` starts them again"
            )
    lab = LabStatus(
        name,
        "partial" if problems else "up",
        str(where.source),
        min(created, default=None),
        nodes,
        [r for rs in responders.values() for r in rs],
        "; ".join(f"host {h}: {why}" for h, why in problems.items()) or None,
        routes=routes,
        served=served,
    )
    return LabOverHosts(lab, host_of, problems, responders)


_VIEW = TypeAdapter(NamespaceView)
_HEALTH = TypeAdapter(list[ResponderHealth])


def _part(reply: Reply) -> tuple[LabStatus | None, str]:
    """A host's status of its part of the lab, or why there is none."""
    if reply.unreachable:
        return None, f"not reachable: {reply.why()}"
    try:
        found = json.loads(reply.out)
    except ValueError:
        found = {}
    if reply.code != 0 or not found.get("labs"):
        error = found.get("error", {}).get("message") if isinstance(found, dict) else None
        return None, error or reply.why()
    data: dict[str, Any] = found["labs"][0]
    try:
        nodes = {
            node: None if v is None else _VIEW.validate_python({"name": v["namespace"], "links": v["links"]})
            for node, v in data["nodes"].items()
        }
        responders = _HEALTH.validate_python(data.get("responders", []))
    except (KeyError, TypeError, ValidationError) as e:
        return None, f"its netlab status --json says what this netlab cannot read ({e})"
    parts = {node: v for node, v in data["nodes"].items() if isinstance(v, dict)}
    routes = {node: v["routes"] for node, v in parts.items() if isinstance(v.get("routes"), int)}
    served = {node: [str(s) for s in v.get("serves") or []] for node, v in parts.items()}
    found_lab = LabStatus(data["lab"], data["status"], data.get("source"), data.get("created"), nodes, responders)
    return replace(found_lab, routes=routes, served=served), ""
