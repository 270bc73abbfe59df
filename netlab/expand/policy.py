"""`cluster.policies` → one nftables table per node, `table inet network-policy`, the way a
policy agent (kube-router, Calico's nftables mode) enforces NetworkPolicy with sets of pod
addresses instead of eBPF (Cilium's idea in S3, "allow by labels, not IPs", without eBPF).

On a node that hosts an isolated pod:

    chain forward (hook forward)       every pod's traffic crosses its node's forward hook:
      ct state established,related accept   routed (other nodes, outside) and bridged (a pod
      ip saddr vmap { POD : jump egress-POD }   on the same cni0: bridge-nf-call-iptables=1,
      ip daddr vmap { POD : jump ingress-POD }  as Kubernetes requires, is set on the node)
    chain ingress-POD / egress-POD     the rules of every policy that selects the pod:
      deny rules first (drop), then allow rules (ingress: accept, egress: return so the
      destination's ingress chain on the same node still has its say), then the default deny

Egress is enforced on the source pod's node, ingress on the destination's. Traffic between
a pod and its own node (the input and output hooks) is not filtered: kubelet's probes and
most implementations let the node reach its pods. A service's DNAT happens in prerouting,
so policies see the endpoint pod, as Kubernetes specifies.

Every drop rule N first records its flow in the set `dropped`: saddr . daddr . l4proto .
dport . N (the rule's number rides in the packet's mark, set just before: the packet is
dropped next, so nothing else sees it), and its comment says "drop N: …", so `netlab
check` can say which rule dropped a probe (netlab.probes.drops). The record is a rule of
its own before the drop: if the key cannot be read (a packet without a transport header)
or the set is full, the drop still holds. (Not a map flow → N: nft 1.0.6 cannot linearize
a map update whose key holds two IPv6 addresses — it aborts on an assertion. Not a set
per rule: a few hundred dynamic sets make the preflight's dry run take seconds.)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from netlab.lab.model import Cluster, Lab
from netlab.lab.policy import (
    DEFAULT_DENY,
    DROPPED_SET,
    NAME_LABEL,
    POLICY_TABLE,
    Direction,
    EgressRule,
    IngressRule,
    NetworkPolicy,
    Peer,
    PolicyPort,
)
from netlab.lab.source import Complaint, Path

BRIDGE_NF = {4: "net.bridge.bridge-nf-call-iptables", 6: "net.bridge.bridge-nf-call-ip6tables"}
# the drop rules' comments: "drop 3: policy NAME ingress_deny[0]", "drop 4: default-deny, …"
_DROP_COMMENT = re.compile(r'comment "drop \d+: (?:policy )?([^ ,"]+)')
_ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"


@dataclass(frozen=True)
class PolicyPod:
    """What policy compilation needs to know about a placed pod."""

    name: str
    node: str
    address: str
    namespace: str
    labels: dict[str, str]


@dataclass
class _Rules:
    """One pod's rules in one direction, in the order nftables will see them."""

    policies: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _words(selector: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in selector.items()) + "}"


class _Compiler:
    def __init__(self, cluster: Cluster, pods: Sequence[PolicyPod], family: int, complaints: list[Complaint]) -> None:
        self.cluster = cluster
        self.pods = list(pods)
        self.family = family
        self.complaints = complaints
        self.ip = "ip" if family == 4 else "ip6"
        names = {p.namespace for p in pods} | set(cluster.namespaces) | {p.namespace for p in cluster.policies.values()}
        self.namespace_labels = {
            ns: {**(cluster.namespaces[ns].labels if ns in cluster.namespaces else {}), NAME_LABEL: ns} for ns in names
        }

    # ------------------------------------------------------------ who is selected

    def selected(self, name: str, policy: NetworkPolicy) -> list[PolicyPod]:
        path: Path = ("cluster", "policies", name)
        mine = [p for p in self.pods if p.namespace == policy.namespace]
        chosen = [p for p in mine if _matches(policy.pod_selector, p.labels)]
        if not mine:
            self.complaints.append(
                (
                    (*path, "namespace"),
                    (
                        f"namespace {policy.namespace} has no pods, so the policy applies to nothing (pods' namespaces: "
                        f"{', '.join(sorted({p.namespace for p in self.pods})) or 'none'})"
                    ),
                )
            )
        elif not chosen:
            labels = sorted({f"{k}: {v}" for p in mine for k, v in p.labels.items()})
            self.complaints.append(
                (
                    (*path, "pod_selector"),
                    (
                        f"pod_selector {_words(policy.pod_selector)} matches no pod of namespace {policy.namespace}, so "
                        f"the policy applies to nothing (labels there: {', '.join(labels) or 'none'})"
                    ),
                )
            )
        return chosen

    def peer_pods(self, policy: NetworkPolicy, peer: Peer, path: Path) -> list[PolicyPod]:
        if peer.namespace_selector is None:
            spaces = {policy.namespace}
        else:
            spaces = {ns for ns, labels in self.namespace_labels.items() if _matches(peer.namespace_selector, labels)}
        chosen = [p for p in self.pods if p.namespace in spaces and _matches(peer.pod_selector or {}, p.labels)]
        if not chosen:
            if not spaces:
                known = sorted(f"{ns} {_words(labels)}" for ns, labels in self.namespace_labels.items())
                why = (
                    f"namespace_selector {_words(peer.namespace_selector or {})} matches no namespace "
                    f"(namespaces: {'; '.join(known)})"
                )
            else:
                labels = sorted({f"{k}: {v}" for p in self.pods if p.namespace in spaces for k, v in p.labels.items()})
                why = (
                    f"pod_selector {_words(peer.pod_selector or {})} matches no pod of namespace "
                    f"{', '.join(sorted(spaces))} (labels there: {', '.join(labels) or 'none'})"
                )
            self.complaints.append((path, f"this peer selects no pod: {why}"))
        return chosen

    def check_block(self, peer: Peer, path: Path) -> None:
        assert peer.ip_block is not None
        cidr = ipaddress.ip_network(peer.ip_block.cidr)
        if cidr.version != self.family:
            self.complaints.append(
                (
                    (*path, "ip_block", "cidr"),
                    (
                        f"cidr {cidr} is IPv{cidr.version} but the pods are IPv{self.family}; a single-stack cluster's "
                        "policies match one family"
                    ),
                )
            )
            return
        for i, text in enumerate(peer.ip_block.except_):
            net = ipaddress.ip_network(text)
            if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
                self.complaints.append(
                    (
                        (*path, "ip_block", "except", i),
                        (f"except {net} is not inside cidr {cidr}; an exception carves a part out of the block"),
                    )
                )

    # ------------------------------------------------------------ rules → nftables

    def matches(
        self,
        policy_name: str,
        policy: NetworkPolicy,
        rule: IngressRule | EgressRule,
        direction: Direction,
        where: str,
        path: Path,
        sets: dict[str, tuple[str, list[str]]],
    ) -> list[str]:
        """The nftables matches of one rule: one line per (peer kind × protocol); empty
        when the rule can match nothing."""
        peers = rule.from_ if isinstance(rule, IngressRule) else rule.to
        side = "saddr" if direction == "ingress" else "daddr"
        peer_key = "from" if direction == "ingress" else "to"
        peer_matches: list[str] = []
        pods: list[str] = []
        has_pod_peer = False
        for j, peer in enumerate(peers):
            ppath: Path = (*path, peer_key, j)
            if peer.ip_block is not None:
                self.check_block(peer, ppath)
                m = f"{self.ip} {side} {peer.ip_block.cidr}"
                if peer.ip_block.except_:
                    m += f" {self.ip} {side} != {{ {', '.join(peer.ip_block.except_)} }}"
                peer_matches.append(m)
            else:
                has_pod_peer = True
                pods += [p.address for p in self.peer_pods(policy, peer, ppath)]
        if has_pod_peer:
            set_name = f"{where}-{policy_name}-{path[-1]}"
            sets[set_name] = (
                f"policy {policy_name} {path[-2]}[{path[-1]}]: its pod peers",
                sorted(set(pods), key=ipaddress.ip_address),
            )
            peer_matches.insert(0, f"{self.ip} {side} @{set_name}")
        if not peers:
            peer_matches = [""]
        return [" ".join(x for x in (p, q) if x) for p in peer_matches for q in _port_matches(rule.ports)]

    def compile(self) -> dict[str, str]:
        per_pod: dict[tuple[str, Direction], _Rules] = {}
        sets_of_node: dict[str, dict[str, tuple[str, list[str]]]] = {}
        for name, policy in self.cluster.policies.items():
            path: Path = ("cluster", "policies", name)
            types = policy.types()
            for direction, key in (("ingress", "ingress"), ("egress", "egress")):
                if direction not in types and (getattr(policy, key) or getattr(policy, f"{key}_deny")):
                    self.complaints.append(
                        (
                            (*path, "policy_types"),
                            (
                                f"the policy has {key} rules but policy_types {list(types)} leaves {direction} out, so they "
                                f"would be ignored; add {direction} to policy_types"
                            ),
                        )
                    )
            selected = self.selected(name, policy)
            compiled: dict[str, list[tuple[str, list[str]]]] = {}
            sets: dict[str, tuple[str, list[str]]] = {}
            for direction in types:
                for kind in (direction, f"{direction}_deny"):
                    rules: list[IngressRule | EgressRule] = list(getattr(policy, kind))
                    where = ("deny-" if kind.endswith("_deny") else "") + ("from" if direction == "ingress" else "to")
                    compiled[kind] = [
                        (f"{kind}[{i}]", self.matches(name, policy, rule, direction, where, (*path, kind, i), sets))
                        for i, rule in enumerate(rules)
                    ]
            for pod in selected:
                sets_of_node.setdefault(pod.node, {}).update(sets)
                for direction in types:
                    rules_here = per_pod.setdefault((pod.name, direction), _Rules())
                    rules_here.policies.append(name)
                    for what, lines in compiled[f"{direction}_deny"]:
                        rules_here.deny += [f"{m}\t{name} {what}" for m in lines]
                    for what, lines in compiled[direction]:
                        rules_here.allow += [f"{m}\t{name} {what}" for m in lines]
        by_name = {p.name: p for p in self.pods}
        out: dict[str, str] = {}
        for node in self.cluster.nodes:
            local = [(by_name[pod], d, r) for (pod, d), r in per_pod.items() if by_name[pod].node == node]
            if local:
                out[node] = self.table(local, sets_of_node.get(node, {}))
        return out

    def table(self, local: list[tuple[PolicyPod, Direction, _Rules]], sets: dict[str, tuple[str, list[str]]]) -> str:
        ip, addr_type = self.ip, "ipv4_addr" if self.family == 4 else "ipv6_addr"
        key = f"{ip} saddr . {ip} daddr . meta l4proto . th dport . meta mark"
        chains: list[str] = []
        drops = 0

        def drop(match: str, words: str) -> None:
            nonlocal drops
            drops += 1
            lead = f"{match} " if match else ""
            chains.append(f"\t\t{lead}meta mark set {drops} update @{DROPPED_SET} {{ {key} }}")
            chains.append(f"\t\t{lead}counter drop comment {_comment(f'drop {drops}: {words}')}")

        egress = sorted((p.address, p.name) for p, d, _ in local if d == "egress")
        ingress = sorted((p.address, p.name) for p, d, _ in local if d == "ingress")
        chains += [
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
            "\t\tct state established,related accept",
        ]
        if self.family == 6:  # neighbour discovery is not tracked (ct state untracked): let it be
            chains.append(f"\t\ticmpv6 type {{ {_ND_TYPES} }} accept")
        if egress:
            chains.append(f"\t\t{ip} saddr vmap {{ " + ", ".join(f"{a} : jump egress-{n}" for a, n in egress) + " }")
        if ingress:
            chains.append(f"\t\t{ip} daddr vmap {{ " + ", ".join(f"{a} : jump ingress-{n}" for a, n in ingress) + " }")
        chains.append("\t}")
        for pod, direction, rules in sorted(local, key=lambda x: (x[0].name, x[1])):
            chains.append(f"\tchain {direction}-{pod.name} {{")
            chains.append(
                f"\t\t# pod {pod.namespace}/{pod.name} ({pod.address}), isolated for {direction} by "
                f"{', '.join(rules.policies)}"
            )
            for line in rules.deny:
                match, what = line.split("\t")
                drop(match, f"policy {what}")
            verdict = "accept" if direction == "ingress" else "return"
            for line in rules.allow:
                match, what = line.split("\t")
                lead = f"{match} " if match else ""
                chains.append(f"\t\t{lead}counter {verdict} comment {_comment(f'allow: policy {what}')}")
            drop("", f"{DEFAULT_DENY}, {direction} of pod {pod.namespace}/{pod.name}")
            chains.append("\t}")

        lines = [
            f"table inet {POLICY_TABLE} {{",
            f"\tset {DROPPED_SET} {{",
            f"\t\ttypeof {key}",
            '\t\tcomment "the flows the drop rules dropped, with the rule\'s number (for netlab check)"',
            "\t\tsize 65535",
            "\t\tflags dynamic,timeout",
            "\t\ttimeout 10m",
            "\t}",
        ]
        for set_name, (comment, members) in sorted(sets.items()):
            lines += [f"\tset {set_name} {{", f"\t\ttype {addr_type}", f"\t\tcomment {_comment(comment)}"]
            if members:
                lines.append(f"\t\telements = {{ {', '.join(members)} }}")
            lines.append("\t}")
        return "\n".join([*lines, *chains, "}"]) + "\n"


def _comment(text: str) -> str:
    """An nftables comment: quoted, at most 127 bytes (libnftnl's limit is 128 with the NUL)."""
    text = text.replace('"', "'")
    while len(text.encode()) > 127:
        text = text[:-4] + "..."
    return f'"{text}"'


def _port_matches(ports: Iterable[PolicyPort]) -> Iterator[str]:
    """One match per protocol: `meta l4proto tcp th dport { 80, 8000-8100 }`; every port of a
    protocol when one entry has no port; no match at all for an empty list."""
    by_proto: dict[str, list[str] | None] = {}
    for p in ports:
        proto = p.protocol.lower()
        if p.port is None:
            by_proto[proto] = None
        elif by_proto.get(proto, []) is not None:
            number = str(p.port) if p.end_port in (None, p.port) else f"{p.port}-{p.end_port}"
            by_proto.setdefault(proto, [])
            listed = by_proto[proto]
            assert listed is not None
            listed.append(number)
    if not by_proto:
        yield ""
    for proto, numbers in by_proto.items():
        if numbers is None:
            yield f"meta l4proto {proto}"
        elif len(numbers) == 1:
            yield f"meta l4proto {proto} th dport {numbers[0]}"
        else:
            yield f"meta l4proto {proto} th dport {{ {', '.join(numbers)} }}"


def compile_policies(
    cluster: Cluster, pods: Sequence[PolicyPod], family: int, complaints: list[Complaint]
) -> dict[str, str]:
    """Each node's `table inet network-policy` ruleset (nodes without isolated pods have
    none); problems go to `complaints` at their key."""
    if not cluster.policies:
        return {}
    return _Compiler(cluster, pods, family, complaints).compile()


def check_dropped_by(lab: Lab) -> Iterator[Complaint]:
    """`expect: {dropped_by: …}` names a policy of the lab, or the default deny. In an
    explicit lab (`netlab render`'s output, or written by hand) the policies are what the
    nodes' `table inet network-policy` rulesets say in their drop rules' comments."""
    if lab.cluster is not None:
        policies = set(lab.cluster.policies)
        known = policies | ({DEFAULT_DENY} if policies else set())
    else:
        texts = [
            r.ruleset
            for node in lab.nodes.values()
            for r in node.nftables
            if r.ruleset and f"table inet {POLICY_TABLE} {{" in r.ruleset
        ]
        known = {m.group(1) for text in texts for m in _DROP_COMMENT.finditer(text)}
        policies = {k for k in known if k != DEFAULT_DENY}
    for i, check in enumerate(lab.checks):
        wanted = getattr(getattr(check, "expect", None), "dropped_by", None)
        if not isinstance(wanted, str) or wanted in known:  # a ruleset's rule: netlab.lab.check_refs
            continue
        if not known:
            why = "this lab has no network policies (`cluster.policies`), so no policy drops anything"
        else:
            why = (
                f"it is neither a policy ({', '.join(sorted(policies)) or 'none'}) nor {DEFAULT_DENY!r} "
                "(the drop of an isolated pod that no rule allowed)"
            )
        yield ("checks", i, "expect", "dropped_by"), f"dropped_by {wanted!r}: {why}"
