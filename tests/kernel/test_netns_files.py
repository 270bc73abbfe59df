"""The files namespaces are mounted on (root, real kernel): netlab makes them as hard
links of one inode (netns.MountPoints), and what `ip netns` does with its own files
still works on them: exec into one, delete one, while the lab's others stay."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from netlab.kernel.netns import MountPoints


def test_mount_points_share_one_inode(tmp_path: Path) -> None:
    points = MountPoints(str(tmp_path))
    try:
        for name in ("a", "b", "c"):
            points.make(str(tmp_path / name))
        with pytest.raises(FileExistsError):
            points.make(str(tmp_path / "b"))
    finally:
        points.close()
    stats = [os.stat(tmp_path / name) for name in ("a", "b", "c")]
    assert {s.st_ino for s in stats} == {stats[0].st_ino}
    assert stats[0].st_nlink == 3 and stats[0].st_size == 0
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # the inode itself has no name of its own


def test_ip_netns_works_on_netlab_namespaces(lab_file: Any, kn: Any, netlab_cli: Any) -> None:
    spec = {
        "nodes": {
            "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.0.0.1/24"]}}},
            "b": {"links": {"eth0": {"addresses": ["10.0.0.2/24"]}}},
            "c": {},
        }
    }
    lab = lab_file(spec)
    rc, _, err = netlab_cli("up", lab.path)
    assert rc == 0, err
    shown = subprocess.run(
        ["ip", "netns", "exec", lab.ns("a"), "ip", "-o", "addr", "show", "eth0"], capture_output=True, text=True
    )
    assert "10.0.0.1/24" in shown.stdout, shown.stderr
    deleted = subprocess.run(["ip", "netns", "del", lab.ns("c")], capture_output=True, text=True)
    assert deleted.returncode == 0, deleted.stderr
    assert kn.namespaces_of(lab.name) == [lab.ns("a"), lab.ns("b")]
    kn.assert_ping(lab.ns("a"), "10.0.0.2")
    rc, out, _ = netlab_cli("down", lab.name)
    assert rc == 0 and f"lab {lab.name} is down: removed 2 namespaces" in out
    assert kn.leftovers(lab.name) == []
