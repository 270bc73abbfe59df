"""`netlab up --dry-run --hosts FILE`: where each node goes, what crosses between hosts
(and its MTU), and the plan each host will run, as ip(8)-like lines."""

from __future__ import annotations

from netlab.multihost.inventory import Inventory
from netlab.multihost.split import Split
from netlab.plan.build import build_plan
from netlab.wording import plural


def render_split(split: Split, inventory: Inventory) -> str:
    lab, placement = split.lab, split.placement
    used = [h for h in placement.hosts if h in split.sub_labs]
    lines = [
        f"# lab {lab.name} over {plural(len(used), 'host')} of {inventory.file}: "
        f"{plural(len(lab.nodes), 'node')}, {plural(len(split.tunnels), 'link')} between hosts",
        "# placement (* by `host:`, else balanced by namespace count):",
    ]
    for host in placement.hosts:
        h = inventory.host(host)
        nodes = [f"{n}*" if n in placement.pinned else n for n in placement.nodes_on(host)]
        where = f"{h.ssh_host}" + (f", tunnels from {h.tunnel_address}" if h.tunnel_address != h.ssh_host else "")
        lines.append(f"#   {host} ({where}): {', '.join(nodes) if nodes else 'nothing'}")
    if split.tunnels:
        lines.append(
            f"# links between hosts, each a VXLAN pair (UDP {split.port}) whose sockets are in the hosts' own "
            "namespaces:"
        )
    for t in split.tunnels:
        a, b = t.ends
        mtus = f"mtu {a.mtu}" if a.mtu == b.mtu else f"mtu {a.mtu} / {b.mtu}"
        lines.append(
            f"#   {a.node}:{a.ifname} ({a.host}) ⇄ {b.node}:{b.ifname} ({b.host}): VNI {t.vni}, {mtus} "
            f"(at most {t.capacity} fits)"
        )
    text = "\n".join(lines) + "\n"
    for host in used:
        text += f"\n# ---- host {host}\n" + build_plan(split.sub_labs[host]).render()
    return text
