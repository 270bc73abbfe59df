"""Network policy in the lab file: `cluster.policies`, Kubernetes NetworkPolicy with the
lab file's snake_case keys, plus Cilium's deny rules.

    policies:
      db-allow-api:                       # the policy's name (unique in the lab)
        namespace: prod                   # default: default
        pod_selector: {app: db}           # the pods it isolates; {} = every pod of the namespace
        policy_types: [ingress]           # default as Kubernetes: ingress, plus egress with egress rules
        ingress:
          - from:
              - pod_selector: {app: api}              # pods of the policy's namespace
              - namespace_selector: {team: ops}       # every pod of these namespaces
              - namespace_selector: {team: ops}       # both: these pods of these namespaces
                pod_selector: {app: probe}
              - ip_block: {cidr: 10.10.0.0/16, except: [10.10.9.0/24]}
            ports:
              - {protocol: TCP, port: 5432}
              - {port: 8000, end_port: 8100}
        ingress_deny: [...]               # the same shape; a match is dropped, whatever allows it

Semantics are Kubernetes' (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
traffic is allowed by default; a pod selected by a policy of a type (ingress, egress) is
isolated for that direction, and then only what some rule of some policy selecting it
allows passes. A rule without `from`/`to` matches every peer, without `ports` every port.
Replies of allowed connections always pass. Deny rules (Cilium's ingressDeny/egressDeny)
win over every allow.

Label selectors are `matchLabels` (every listed label must be equal). Namespaces carry the
labels given in `cluster.namespaces` and `kubernetes.io/metadata.name: NAME`, as the API
server sets it.

Pure: the models only; netlab.expand.policy compiles them to nftables per node.
"""

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from netlab.lab.values import Base, Prefix

DEFAULT_NAMESPACE = "default"
NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace's own label (Kubernetes ≥ 1.21)
DEFAULT_DENY = "default-deny"  # `dropped_by:` for a drop no deny rule made: the pod is isolated
# What expansion builds on each node and `netlab check` reads back: `table inet
# network-policy`, and in it the set `dropped` of the flows its drop rules dropped (with
# the rule's number)
POLICY_TABLE = "network-policy"
DROPPED_SET = "dropped"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(kind: str) -> Any:
    def check(value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(
                f"{kind} name {value!r} must be a DNS label as Kubernetes wants it: at most 63 "
                "lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        return value

    return AfterValidator(check)


NamespaceName = Annotated[str, _dns_label("namespace")]
PolicyName = Annotated[str, _dns_label("policy")]
Labels = dict[Annotated[str, Field(min_length=1, max_length=316)], Annotated[str, Field(max_length=63)]]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class Namespace(Base):
    labels: Labels = {}


class IpBlock(Base):
    cidr: Prefix
    except_: list[Prefix] = Field(default=[], alias="except")  # inside cidr, taken out of it


class Peer(Base):
    """Who is on the other end: pods (by their labels, in namespaces by theirs), or addresses."""

    pod_selector: Labels | None = None  # alone: pods of the policy's own namespace
    namespace_selector: Labels | None = None  # alone: every pod of the matching namespaces
    ip_block: IpBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.ip_block is not None and (self.pod_selector is not None or self.namespace_selector is not None):
            raise ValueError(
                "a peer is either `ip_block:` or pod/namespace selectors, not both (Kubernetes "
                "refuses it too); make them two peers of the list"
            )
        if self.ip_block is None and self.pod_selector is None and self.namespace_selector is None:
            raise ValueError(
                "a peer needs `pod_selector:`, `namespace_selector:` or `ip_block:` (an empty "
                "peer list, or no `from:`/`to:` at all, means every peer)"
            )
        return self


class PolicyPort(Base):
    protocol: Annotated[Literal["TCP", "UDP", "SCTP"], BeforeValidator(_upper)] = "TCP"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # none: every port of the protocol
    end_port: Annotated[int, Field(ge=1, le=65535)] | None = None  # port … end_port

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.end_port is not None and (self.port is None or self.end_port < self.port):
            raise ValueError(f"end_port {self.end_port} needs a `port:` at or below it (the range is port … end_port)")
        return self


class IngressRule(Base):
    from_: list[Peer] = Field(default=[], alias="from")  # empty: every source
    ports: list[PolicyPort] = []  # empty: every port and protocol


class EgressRule(Base):
    to: list[Peer] = []  # empty: every destination
    ports: list[PolicyPort] = []


Direction = Literal["ingress", "egress"]


class NetworkPolicy(Base):
    namespace: NamespaceName = DEFAULT_NAMESPACE
    pod_selector: Labels = {}  # the pods it applies to; {} = all of its namespace
    # Kubernetes' default: ingress, and egress too when the policy has egress rules
    policy_types: list[Annotated[Direction, BeforeValidator(_lower)]] | None = None
    ingress: list[IngressRule] = []
    egress: list[EgressRule] = []
    ingress_deny: list[IngressRule] = []  # Cilium's ingressDeny: dropped even when allowed
    egress_deny: list[EgressRule] = []

    def types(self) -> tuple[Direction, ...]:
        if self.policy_types is not None:
            return tuple(t for t in ("ingress", "egress") if t in self.policy_types)
        return ("ingress", "egress") if self.egress or self.egress_deny else ("ingress",)
