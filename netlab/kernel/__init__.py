"""kernel: the only package that talks to the kernel (pyroute2's message classes,
libnftables); everything above it sees two seams and plain values.

Writing (`netlab up`): driver.py is the seam (KernelDriver; fake.py fakes it).
netlink.py implements it and keeps only scheduling (a few workers taking namespaces in
turn), namespaces (netns.py) and sockets; what each op becomes lives elsewhere:
encode.py (rtnetlink messages, pure), ipvs.py and ipset.py (their requests, pure, and
their apply), nft.py (rulesets and iptables dumps), sysctl.py, command.py (`exec:`).

Reading (`netlab check`): observer.py is the seam (KernelObserver; fake_observer.py
fakes it), observe.py implements it over one reader per kind of state: routes.py,
conntrack.py, ipvs.py, capture.py, drops.py, each run inside the namespace by inside.py.

Both sides send and read netlink through nlsock.py, the one socket layer (batched
requests with ACKs, queries, dumps; rtnetlink, generic netlink, nfnetlink).
features.py probes what the kernel can do (`netlab doctor`, a lab's `requires:`).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _pyroute2_without_its_init() -> None:
    """Register the pyroute2 package without running its __init__.py, which imports every
    protocol pyroute2 speaks (NDB, IPDB, wireless, devlink, …): 0.08 s of the start-up of
    every command that touches the kernel (a reconcile's whole budget is 0.3 s). netlab
    imports only modules of pyroute2.netlink, which load as usual. The first name looked
    up on the package itself that is not a module (`from pyroute2 import IPRoute`) runs
    the __init__ then."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the import that needs it says so
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # `from pyroute2 import config`
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = __getattr__
    sys.modules["pyroute2"] = package


_pyroute2_without_its_init()
