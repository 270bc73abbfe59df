"""Tests that need kernel features these build machines' kernel lacks (IPVS, VRF, netem,
dummy, the tunnels, VLANs, bridge VLAN filtering). `scripts/test` runs them inside the VM (`netlab vm run`), or directly where the
kernel has everything (the Vagrant box).

Run here on a kernel without them, they skip with the reason — except under CI=true,
where a test that needs a kernel feature must run, never silently skip: they fail and
say how to run them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

VM_TESTS = Path(__file__).resolve().parent
NEEDED = ("ipvs", "vrf", "netem", "dummy", "ipip", "gre", "gretap", "ip6tnl", "ip6gre", "geneve", "vlan", "bridge_vlan")
HOW = "run them in the VM: `netlab vm run -- .venv/bin/pytest tests/vm` (scripts/test does this)"


def missing_features() -> list[str]:
    from netlab.kernel.features import probe_features

    return [f"{f.name} ({f.detail})" for f in probe_features(list(NEEDED)) if not f.ok]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if VM_TESTS in Path(i.path).resolve().parents]
    if not mine:
        return
    for item in mine:
        item.add_marker(pytest.mark.root)
    if os.geteuid() != 0:
        return  # tests/conftest.py skips root tests with its reason
    missing = missing_features()
    if not missing:
        return
    text = f"this kernel lacks {', '.join(missing)}; {HOW}"
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    for item in mine:
        if in_ci:
            item.add_marker(pytest.mark.usefixtures("_fail_missing_feature"))
        else:
            item.add_marker(pytest.mark.skip(reason=text))
    config.stash[_MISSING] = text


_MISSING = pytest.StashKey[str]()


@pytest.fixture
def _fail_missing_feature(request: pytest.FixtureRequest) -> None:
    pytest.fail(
        f"CI=true: a test that needs a kernel feature may not skip; {request.config.stash[_MISSING]}", pytrace=False
    )
