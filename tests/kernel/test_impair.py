"""Impairments on this host's kernel, which has no sch_netem: a lab with `netem:` is
refused before anything exists, with the VM hint (the qdisc itself is tested in
tests/vm/test_netem.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netlab.kernel.features import probe_features


def test_a_lab_with_netem_needs_netem_without_saying_so(netlab_cli: Any, lab_file: Any) -> None:
    """A link end's `netem:` needs sch_netem whether or not `requires:` lists it: exit 3
    before anything exists, saying how to get a kernel that has it."""
    if probe_features(["netem"])[0].ok:
        pytest.skip("this kernel has netem (the VM?); the test needs one without it")
    lab = lab_file("""\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.1.0.1/24], netem: {delay: 50ms, loss: 5%}}
  b:
    links:
      eth0: {addresses: [10.1.0.2/24]}
""")
    r = netlab_cli("up", lab)
    assert r.rc == 3, r.out + r.err
    assert f"lab {lab.name} needs kernel features this kernel lacks:" in r.err and "  netem: " in r.err, r.err
    assert "qdisc kind 'netem' unknown to this kernel (no sch_netem)" in r.err
    assert "netlab vm run" in r.err, r.err
    assert not list(Path("/run/netns").glob(f"{lab.name}.*"))
