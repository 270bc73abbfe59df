"""`netlab status`: what each lab that is up has in the kernel, and its rows and JSON.

Fast by design (a lab of 500 pods in well under half a second): it imports nothing of
the build pipeline (pydantic models, pyroute2; only a lab *file* given as LAB loads
it, to learn the lab's name), reads every namespace in one pass of kernel.survey, and
with LAB reads only that lab's namespaces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from netlab.errors import UsageError, require_root
from netlab.kernel.driver import NamespaceView
from netlab.kernel.netns import list_netns
from netlab.kernel.survey import Surveyed, survey
from netlab.naming import split_netns_name
from netlab.probes.responders import ResponderHealth
from netlab.probes.responders import health as responder_health
from netlab.state import LabState, StateUnreadable, all_states, file_hash, read_state, responder_log_path


@dataclass(frozen=True)
class LabVersion:
    """Which version of the lab file a lab runs: the sha256 of the file's bytes when it was
    last built or reconciled, and whether the file on disk still has them."""

    source_hash: str
    file_changed: bool | None  # None: the file is gone or unreadable
    variant: str | None
    reconciles: int
    updated: str | None

    def __str__(self) -> str:
        words = [f"file sha256 {self.source_hash[:12] or '?'}"]
        if self.variant:
            words.append(f"variant {self.variant}")
        if self.reconciles:
            words.append(f"reconciled {self.reconciles}× (last {self.updated})")
        if self.file_changed:
            words.append("the file has changed since: `netlab up FILE` reconciles")
        elif self.file_changed is None:
            words.append("the file is gone")
        return ", ".join(words)


@dataclass
class LabStatus:
    lab: str
    status: str  # up | building | partial | orphaned (namespaces without state) | state unreadable
    source: str | None
    created: str | None
    nodes: dict[str, NamespaceView | None]  # node → what the kernel shows (None: namespace missing)
    responders: list[ResponderHealth] = field(default_factory=list)
    problem: str | None = None  # what is wrong and what to do (an unreadable state, a dead responder)
    cluster: dict[str, Any] | None = None  # services, endpoints, pods (netlab.expand.cluster.cluster_data)
    version: LabVersion | None = None  # which version of its file runs
    routes: dict[str, int] = field(default_factory=dict)  # node → routes (every table but local), when counted
    served: dict[str, list[str]] = field(default_factory=dict)  # node → what its responders serve (tcp/80, …)


def status(only: str | None = None, variant: str | None = None, *, routes: bool = False) -> list[LabStatus]:
    """Every lab that is up (by its state or by the marks on its namespaces), or only
    lab `only` (a name or its file); with `routes`, each node's routes are counted too."""
    require_root("status", reads_only=True)
    if only is not None:
        return [_one_lab(_lab_name(only, variant), routes)]
    found, broken = all_states()
    states = {s.lab: s for s in found}
    unreadable = {e.lab: e for e in broken}
    read = survey(list_netns(), routes=routes)
    labs = sorted(set(states) | set(unreadable) | _marked(read))
    return [_lab_status(lab, states.get(lab), unreadable.get(lab), read) for lab in labs]


def _one_lab(lab: str, routes: bool) -> LabStatus:
    """Lab `lab` alone: its own state file and namespaces are all that is read."""
    try:
        st, unreadable = read_state(lab), None
    except StateUnreadable as e:
        st, unreadable = None, e
    names = list_netns()
    there = set(names)
    mine = {n for n in names if (split_netns_name(n) or ("",))[0] == lab}
    read = survey(sorted(mine | {ns for ns in (st.nodes.values() if st else ()) if ns in there}), routes=routes)
    if st is None and unreadable is None and lab not in _marked(read):
        found, broken = all_states()
        up = sorted({s.lab for s in found} | {e.lab for e in broken} | _marked(survey(names)))
        raise UsageError(f"lab {lab} is not up (labs up: {', '.join(up) or 'none'})")
    return _lab_status(lab, st, unreadable, read)


def _lab_name(target: str, variant: str | None) -> str:
    from netlab.teardown import resolve_lab_name  # a lab file's name: read by the loader, imported then

    return resolve_lab_name(target, variant)


def _marked(read: dict[str, Surveyed]) -> set[str]:
    return {s.mark[0] for s in read.values() if s.mark}


def _lab_status(
    lab: str, st: LabState | None, unreadable: StateUnreadable | None, read: dict[str, Surveyed]
) -> LabStatus:
    present = {s.mark[1]: name for name, s in read.items() if s.mark and s.mark[0] == lab}
    nodes_ns = dict(st.nodes) if st else present
    views = {node: read[ns].view if ns in read else None for node, ns in nodes_ns.items()}
    routes = {node: n for node, ns in nodes_ns.items() if ns in read and (n := read[ns].routes) is not None}
    if unreadable is not None:
        return LabStatus(lab, "state unreadable", None, None, views, problem=str(unreadable), routes=routes)
    if st is None:
        return LabStatus(lab, "orphaned", None, None, views, routes=routes)
    kind = st.status
    if kind == "up" and any(v is None for v in views.values()):
        kind = "partial"
    health = responder_health(st.pids, responder_log_path(lab))
    dead = [h for h in health if not h.running]
    problem = None
    if dead:
        problem = (
            f"{len(dead)} of its {len(health)} responder processes {'is' if len(dead) == 1 else 'are'} dead: "
            "nothing answers on the ports its nodes serve; `netlab down "
            f"{lab} && netlab up {st.source}` starts them again"
        )
    now = file_hash(st.source)
    version = LabVersion(
        st.source_hash, None if not now else now != st.source_hash, st.variant, st.reconciles, st.updated or None
    )
    served = {node: [str(s) for s in spec.get("serve") or []] for node, spec in st.spec.get("nodes", {}).items()}
    return LabStatus(lab, kind, st.source, st.created, views, health, problem, st.cluster, version, routes, served)


# ---------------------------------------------------------------- rows and JSON

LINK_COLUMNS = ("lab", "node", "interface", "kind", "state", "mtu", "master", "addresses", "netem")
LAB_COLUMNS = ("lab", "status", "nodes", "interfaces", "responders", "source")
NODE_COLUMNS = ("lab", "node", "state", "interfaces", "addresses", "routes", "responders")
_LOOPBACK = ("127.0.0.1/8", "::1/128")


def link_rows(s: LabStatus) -> list[list[str]]:
    """One row per interface of the lab (lo only when it has more than loopback addresses);
    a node whose namespace is missing, one row saying so. Columns: LINK_COLUMNS."""
    rows = []
    for node, view in s.nodes.items():
        if view is None:
            rows.append([s.lab, node, "—", "", "namespace missing", "", "", "", ""])
            continue
        for link in view.links:
            if link.name == "lo" and not [a for a in link.addresses if a.address not in _LOOPBACK]:
                continue
            state = "up" if link.up else "down"
            if link.up and link.oper not in ("up", "unknown"):
                state = f"up ({link.oper})"
            kind = f"{link.kind} (table {link.table})" if link.table is not None else link.kind
            addresses = " ".join(a.address for a in link.addresses)
            rows.append(
                [s.lab, node, link.name, kind, state, str(link.mtu), link.master or "", addresses, link.netem or ""]
            )
    return rows


def lab_rows(s: LabStatus) -> list[list[str]]:
    """The lab in one row: LAB_COLUMNS."""
    present = [v for v in s.nodes.values() if v is not None]
    nodes = f"{len(present)}/{len(s.nodes)}" if len(present) != len(s.nodes) else str(len(s.nodes))
    interfaces = sum(len([link for link in v.links if link.name != "lo"]) for v in present)
    running = sum(h.running for h in s.responders)
    responders = f"{running}/{len(s.responders)} running" if s.responders else "none"
    return [[s.lab, s.status, nodes, str(interfaces), responders, s.source or ""]]


def node_rows(s: LabStatus) -> list[list[str]]:
    """A row per node with counts: NODE_COLUMNS. state is "ok", "namespace missing", or
    which interfaces are down; addresses leave out loopback's own; routes are those of
    every table but local; responders, the ports the node serves (and "dead" when the
    lab's responder process is)."""
    dead = any(not h.running for h in s.responders)
    rows = []
    for node, view in s.nodes.items():
        served = len(s.served.get(node, []))
        responders = f"{served} dead" if served and dead else str(served)
        if view is None:
            rows.append([s.lab, node, "namespace missing", "", "", "", responders])
            continue
        links = [link for link in view.links if link.name != "lo"]
        down = [link.name for link in links if not link.up or link.oper not in ("up", "unknown")]
        addresses = sum(a.address not in _LOOPBACK for link in view.links for a in link.addresses)
        routes = s.routes.get(node)
        state = f"down: {' '.join(down)}" if down else "ok"
        rows.append(
            [s.lab, node, state, str(len(links)), str(addresses), "" if routes is None else str(routes), responders]
        )
    return rows


def to_json(s: LabStatus) -> dict[str, Any]:
    """One lab of `status --json` (netlab/schemas/status.v1.json)."""
    return {
        "lab": s.lab,
        "status": s.status,
        "source": s.source,
        "created": s.created,
        "problem": s.problem,
        "version": asdict(s.version) if s.version else None,
        "responders": [asdict(h) for h in s.responders],
        "cluster": s.cluster,
        "nodes": {node: _node_json(s, node, v) for node, v in s.nodes.items()},
    }


def _node_json(s: LabStatus, node: str, view: NamespaceView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    links = [asdict(link) for link in view.links]
    return {"namespace": view.name, "links": links, "routes": s.routes.get(node), "serves": s.served.get(node, [])}


def cluster_lines(cluster: dict[str, Any] | None) -> list[str]:
    """A cluster's services (cluster IP, each port → its endpoints) and pods (node, address)."""
    from netlab.vocabulary import host_port

    if not cluster:
        return []
    lines = [f"  services (kube-proxy {cluster['proxy_mode']} mode):" if cluster["services"] else "  services: none"]
    for svc in cluster["services"]:
        for p in svc["ports"]:
            port = f"{p['name']} " * bool(p["name"]) + f"{p['port']}/{p['protocol']}"
            node_port = f", node port {p['node_port']}" if p["node_port"] else ""
            ends = ", ".join(f"{e['pod']} ({e['node']}) {host_port(e['address'], e['port'])}" for e in p["endpoints"])
            lines.append(f"    {svc['name']}  {svc['cluster_ip']}  {port}{node_port} → {ends or 'no endpoints'}")
    lines.append("  pods:")
    for pod in cluster["pods"]:
        lines.append(f"    {pod['namespace']}/{pod['pod']} on {pod['node']}  {pod['address'] or ''}".rstrip())
    return lines
