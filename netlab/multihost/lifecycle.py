"""The multihost verbs: the lab split over the inventory's hosts, and (engine.py) built,
checked and taken down on each of them."""

from __future__ import annotations

from pathlib import Path

from netlab.load import load_lab_located
from netlab.multihost.inventory import Inventory, load_inventory
from netlab.multihost.placement import place
from netlab.multihost.split import Split, split_lab


def load_split(path: str | Path, variant: str | None, hosts: str) -> tuple[Inventory, Split]:
    """The lab in `path` placed on the hosts of inventory `hosts` and split into sub-labs;
    LabError (exit 2) for a bad lab, inventory, `host:` or MTU, before anything runs."""
    inventory = load_inventory(hosts)
    lab, origin = load_lab_located(path, variant)
    return inventory, split_lab(lab, origin, place(lab, origin, inventory), inventory)
