"""The multihost verbs: the lab split over the inventory's hosts, and (engine.py) built,
checked and taken down on each of them; the coordinator's record (record.py) written
when the lab is up and removed when every host is clean."""

from __future__ import annotations

from pathlib import Path

from netlab.load import load_lab_located
from netlab.multihost import engine
from netlab.multihost.inventory import Inventory, load_inventory
from netlab.multihost.placement import place
from netlab.multihost.record import Record, remove_record, write_record
from netlab.multihost.split import Split, split_lab


def load_split(path: str | Path, variant: str | None, hosts: str) -> tuple[Inventory, Split]:
    """The lab in `path` placed on the hosts of inventory `hosts` and split into sub-labs;
    LabError (exit 2) for a bad lab, inventory, `host:` or MTU, before anything runs."""
    inventory = load_inventory(hosts)
    lab, origin = load_lab_located(path, variant)
    return inventory, split_lab(lab, origin, place(lab, origin, inventory), inventory)


def up(path: str, variant: str | None, inventory: Inventory, split: Split) -> engine.HostsUp:
    """Build the split lab on its hosts (engine.up), then record it on this machine."""
    result = engine.up(split, inventory)
    hosts = {h: split.placement.nodes_on(h) for h in split.sub_labs}
    write_record(Record(split.lab.name, str(Path(path).resolve()), variant, str(Path(inventory.file).resolve()), hosts))
    return result


def down(lab: str, inventory: Inventory) -> engine.HostsDown:
    """Take `lab` down on every host (engine.down); the record goes once every host is clean."""
    result = engine.down(lab, inventory)
    if not result.unreachable:
        remove_record(lab)
    return result
