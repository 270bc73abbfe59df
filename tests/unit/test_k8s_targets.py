"""Kubernetes names as probe targets (netlab.expand.targets): `service:`, `pod:`, `to:
svc/…` and `to: nodeport/…` become the address and port they stand for in the expanded
lab; names that do not resolve are load errors that list what does."""

from __future__ import annotations

import pytest

from netlab.errors import LabError
from netlab.lab.checks import ProbeCheck
from netlab.lab.render import lab_data
from netlab.load import load_lab_text

CLUSTER = """
name: shop
cluster:
  nodes: {node1: {}, node2: {}}
  pods:
    web-0: {node: node2, namespace: shop, labels: {app: web}, serve: [tcp/8080, udp/5353]}
    client: {node: node1}
  services:
    web:
      namespace: shop
      type: NodePort
      selector: {app: web}
      ports:
        - {name: http, port: 80, target_port: 8080, node_port: 30080}
        - {name: dns, port: 53, target_port: 5353, protocol: UDP}
checks:
"""


def probes(checks: str) -> list[dict[str, object]]:
    lab = load_lab_text(CLUSTER + checks, "shop.yaml")
    assert all(isinstance(c, ProbeCheck) for c in lab.checks)
    return [c["probe"] for c in lab_data(lab)["checks"]]


def test_names_become_addresses_and_ports() -> None:
    found = probes(
        """
  - {name: long form, probe: {from: client, service: shop/web, port: http}}
  - {name: short form by number, probe: {from: client, to: "svc/shop/web:80"}}
  - {name: udp port by name, probe: {from: client, to: "svc/shop/web:dns"}}
  - {name: node port, probe: {from: client, to: "nodeport/node2/shop/web:http"}}
  - {name: pod, probe: {from: client, pod: shop/web-0, port: 8080}}
  - {name: pod in any namespace, probe: {from: client, pod: web-0, port: 8080}}
"""
    )
    assert found == [
        {"from": "client", "to": "10.96.0.10", "port": 80},
        {"from": "client", "to": "10.96.0.10", "port": 80},
        {"from": "client", "to": "10.96.0.10", "port": 53, "proto": "udp"},
        {"from": "client", "to": "192.168.49.3", "port": 30080},
        {"from": "client", "to": "web-0", "port": 8080},
        {"from": "client", "to": "web-0", "port": 8080},
    ]


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (
            "{from: client, service: shop/wbe}",
            "checks[0].probe.service: no service shop/wbe in the cluster; did you mean 'shop/web'? (services: shop/web)",
        ),
        (
            "{from: client, service: shop/web}",
            "checks[0].probe.service: service shop/web has ports http (80/tcp), dns (53/udp): say which with `port:`",
        ),
        (
            "{from: client, service: shop/web, port: https}",
            "checks[0].probe.port: service shop/web has no port 'https'; it has ports http (80/tcp), dns (53/udp)",
        ),
        (
            "{from: client, to: 'svc/web:http'}",
            "checks[0].probe.to: no service default/web in the cluster; did you mean 'shop/web'? (services: shop/web)",
        ),
        (
            "{from: client, to: 'nodeport/node3/shop/web:http'}",
            "checks[0].probe.to: no cluster node 'node3'; did you mean 'node2'? (cluster nodes: node1, node2)",
        ),
        ("{from: client, pod: other/web-0}", "checks[0].probe.pod: pod web-0 is in namespace shop, not other"),
        (
            "{from: client, pod: shop/web-1}",
            "checks[0].probe.pod: no pod shop/web-1 in the cluster; did you mean 'shop/web-0'? "
            "(pods: default/client, shop/web-0)",
        ),
        (
            "{from: client, to: web-0, pod: web-0}",
            "checks[0].probe.pod: a probe goes to one place: give one of to, pod",
        ),
        (
            "{from: client, to: 'svc/shop/web:dns', proto: tcp}",
            "checks[0].probe.proto: shop/web:dns is a UDP port; a tcp probe gets no answer there",
        ),
    ],
)
def test_bad_names_are_load_errors(probe: str, message: str) -> None:
    with pytest.raises(LabError) as err:
        load_lab_text(CLUSTER + f"  - {{name: c, probe: {probe}}}\n", "shop.yaml")
    assert [p.message if not p.path else f"{p.path}: {p.message}" for p in err.value.problems] == [message]


def test_no_cluster_no_names() -> None:
    with pytest.raises(LabError) as err:
        load_lab_text(
            "name: x\nnodes: {a: {}}\nchecks:\n  - {name: c, probe: {from: a, service: shop/web}}\n", "x.yaml"
        )
    [problem] = err.value.problems
    assert problem.path == "checks[0].probe.service"
    assert "this lab has no `cluster:`" in problem.message
