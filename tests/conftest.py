"""Test-suite wide hooks.

Tests marked `root` build real network namespaces; without root they are skipped with
a reason instead of failing. (tests/kernel/conftest.py marks everything under
tests/kernel as `root`; its hook runs first, this one last.)
"""

from __future__ import annotations

import os

import pytest

ROOT_REASON = "needs root: real network namespaces (run the README's test command as root)"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=ROOT_REASON)
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)
