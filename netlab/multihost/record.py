"""The coordinator's record of a lab it built over hosts, so that later commands need only
the lab's name: which file (and variant) it was built from, with which inventory, and
which nodes went to which host.

The coordinator needs no root, so the record is the user's: one JSON file per lab in
$XDG_STATE_HOME/netlab/hosts (~/.local/state/netlab/hosts). `up --hosts` writes it,
`down --hosts` removes it once every host is clean. The hosts keep their own state; the
record only says where to look.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from netlab.errors import UsageError


@dataclass(frozen=True)
class Record:
    lab: str
    source: str  # the lab file, absolute
    variant: str | None
    inventory: str  # the inventory file, absolute
    hosts: dict[str, list[str]]  # host → its nodes, in the lab's order

    def host_of(self) -> dict[str, str]:
        """node → host."""
        return {node: host for host, nodes in self.hosts.items() for node in nodes}


def record_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "netlab" / "hosts"


def record_path(lab: str) -> Path:
    return record_dir() / f"{lab}.json"


def write_record(record: Record) -> None:
    path = record_path(record.lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.replace(path)


def read_record(lab: str) -> Record | None:
    path = record_path(lab)
    try:
        text = path.read_text()
    except OSError:  # none, or not this user's to read (sudo keeps HOME): no record of this user's
        return None
    try:
        return Record(**json.loads(text))
    except (ValueError, TypeError) as e:
        raise UsageError(
            f"the record of lab {lab} over hosts ({path}) cannot be read ({e}); give the lab file and "
            f"--hosts FILE instead of its name, or remove {path}"
        ) from None


def remove_record(lab: str) -> None:
    record_path(lab).unlink(missing_ok=True)
