"""expand: high-level sections → the explicit objects a user could have written.

The `cluster:` section (nodes with pod subnets, pods, the flannel backend) expands here
into plain `nodes:`; services and policies will join it. `netlab render` prints the
result, so nothing is magic; a lab without such sections comes back unchanged.
"""

from __future__ import annotations

from netlab.expand.cluster import Expansion, expand_cluster
from netlab.lab.model import Lab


def expand(lab: Lab) -> Expansion:
    return expand_cluster(lab)


__all__ = ["Expansion", "expand"]
