"""expand: high-level sections → the explicit objects a user could have written.

Today a lab is already explicit, so expansion returns it unchanged; the cluster
section (nodes with pod CIDRs, pods, services, policies) will expand here, and
`netlab render` will print the result so nothing is magic.
"""

from __future__ import annotations

from netlab.spec.model import Lab


def expand(lab: Lab) -> Lab:
    return lab
