"""Descriptors at scale (root, real kernel): `netlab up` holds a namespace fd and a
netlink socket per namespace while it builds (5000 namespaces: 10006 at the peak, see
bench/namespaces). Under an RLIMIT_NOFILE too low for the lab it refuses before creating
anything (exit 3, how many it needs and how to raise the limit), instead of failing on
"Too many open files" halfway; at exactly the limit it asks for, the lab builds."""

from __future__ import annotations

import resource
import subprocess
from typing import Any

from netlab.kernel.netns import SPARE_FDS

from .conftest import cli_argv, cli_env

PODS = 60


def pods_lab() -> dict[str, Any]:
    links: dict[str, Any] = {"br0": {"kind": "bridge", "addresses": ["10.0.0.1/24"]}}
    nodes: dict[str, Any] = {"host": {"links": links}}
    for i in range(PODS):
        links[f"p{i}"] = {"peer": f"pod{i}:eth0", "master": "br0"}
        nodes[f"pod{i}"] = {"links": {"eth0": {"addresses": [f"10.0.0.{i + 2}/24"]}}}
    return {"nodes": nodes}


def up_with_limit(path: Any, nofile: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.run(
        cli_argv("up", path), capture_output=True, text=True, env=cli_env(), cwd="/", preexec_fn=limit, timeout=120
    )


def test_a_lab_too_big_for_the_descriptor_limit_is_refused_before_anything_exists(lab_file: Any, kn: Any) -> None:
    lab = lab_file(pods_lab())
    needed = 2 * (PODS + 1) + SPARE_FDS
    r = up_with_limit(lab.path, needed - 1)
    assert r.returncode == 3, r.stderr
    assert f"lab {lab.name} has {PODS + 1} namespaces" in r.stderr
    assert f"{needed} in all, but this process may open only {needed - 1} (RLIMIT_NOFILE)" in r.stderr
    assert "Too many open files" not in r.stderr
    assert kn.namespaces_of(lab.name) == []


def test_at_the_limit_it_asks_for_the_lab_builds(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    lab = lab_file(pods_lab())
    r = up_with_limit(lab.path, 2 * (PODS + 1) + SPARE_FDS)
    assert r.returncode == 0, r.stderr
    assert len(kn.namespaces_of(lab.name)) == PODS + 1
    kn.assert_ping(lab.ns("pod0"), f"10.0.0.{PODS + 1}")
    rc, _, err = netlab_cli("down", lab.name)
    assert rc == 0, err
    assert kn.leftovers(lab.name) == []
