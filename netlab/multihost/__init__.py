"""One lab over several machines, through OpenSSH (docs/multihost.md).

The coordinator loads and expands the lab once, places its nodes on the inventory's
hosts (placement.py), and splits it into one explicit sub-lab per host (split.py): a veth
whose ends land on different hosts becomes a point-to-point VXLAN pair, each end made
from its host's own network namespace and placed in the node under the veth end's name.
Each host builds its sub-lab with its own netlab, so `netlab down LAB` on a host alone
cleans it.

    inventory.py   Ansible YAML inventory → hosts (how ssh reaches them, tunnel address, MTU)
    placement.py   node → host: `host:`, pods with their cluster node, otherwise balanced
    split.py       the expanded lab → one sub-lab per host, cross-host links → tunnels
    render.py      `up --dry-run --hosts`: the placement and each host's plan
"""
