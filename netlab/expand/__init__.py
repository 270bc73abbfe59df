"""expand: high-level sections → the explicit objects a user could have written.

A lab's `cluster:` section (nodes with pod subnets, pods, the flannel backend, services,
network policies) becomes plain `nodes:`, in the phases `expand()` lists: the cluster laid
out (cluster.py), services resolved (services.py), what kube-proxy's mode writes on each
node (kube_proxy.py: kube_iptables.py, kube_nftables.py, kube_ipvs.py), the policies'
rulesets (policy.py), then the explicit nodes. Problems are reported at their key in
`cluster:`, all of a phase's at once, and stop the expansion. `netlab render` prints the
result, so nothing is magic, and `netlab graph` draws it with the layout the expansion
keeps. A lab without such sections comes back unchanged.
"""

from __future__ import annotations

from netlab.expand.cluster import Expansion, check_networks, explicit_nodes, place
from netlab.expand.kube_proxy import kube_proxy, reserved_names
from netlab.expand.policy import check_dropped_by, compile_policies
from netlab.expand.services import resolve_services
from netlab.expand.targets import resolve_targets, without_cluster
from netlab.lab.model import Lab
from netlab.lab.source import Complaint


def expand(lab: Lab) -> Expansion:
    # checks: a check's `dropped_by:` names a policy (also in a lab without `cluster:`)
    complaints: list[Complaint] = list(check_dropped_by(lab))
    cluster = lab.cluster
    if cluster is None:
        return Expansion(lab, complaints + list(without_cluster(lab)))
    # cluster: its networks first, since addresses cannot be handed out from wrong ones
    complaints += check_networks(cluster)
    if complaints:
        return Expansion(lab, complaints)
    # cluster: node addresses and pod subnets (flannel), pods on nodes and their addresses
    placement = place(lab, cluster, complaints)
    if complaints:
        return Expansion(lab, complaints)
    # services: each Service port's cluster IP and endpoints (the pods it selects)
    complaints += reserved_names(cluster)
    services = (
        resolve_services(cluster, placement.service_pods(), placement.family, complaints) if cluster.services else []
    )
    # checks: Kubernetes names as probe targets (`service:`, `pod:`, `to: svc/…`) → addresses
    checks = resolve_targets(
        lab.checks,
        services,
        {p.name: p.spec.namespace for p in placement.pods},
        {name: str(addr) for name, addr in placement.addresses.items()},
        complaints,
    )
    if complaints:
        return Expansion(lab, complaints)
    # kube-proxy: what the writer of the cluster's proxy_mode programs on each node
    proxies = {
        name: kube_proxy(cluster, name, services, placement.addresses[name], placement.subnets[name])
        for name in cluster.nodes
    }
    # policy: each node's `table inet network-policy` for the NetworkPolicies and deny rules
    policies = compile_policies(cluster, placement.policy_pods(), placement.family, complaints)
    if complaints:
        return Expansion(lab, complaints)
    # explicit nodes: the underlay switch, each node with the above, each pod; then the lab's own
    nodes, origins = explicit_nodes(lab, placement, proxies, policies)
    # the layout: who is where, which the plain nodes no longer say (netlab graph)
    layout = placement.layout(services)
    return Expansion(lab.model_copy(update={"cluster": None, "nodes": nodes, "checks": checks}), [], origins, layout)


__all__ = ["Expansion", "expand"]
