"""What netlab has built: one JSON file per lab in /run/netlab (root-only, written
atomically), so `down` and `status` work from any later process. /run is a tmpfs:
after a reboot both the state and the namespaces are gone, which is consistent."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from netlab.naming import STATE_DIR


@dataclass
class LabState:
    lab: str
    source: str  # absolute path of the lab file
    fingerprint: str  # netlab.plan.build.fingerprint of the lab content
    status: str  # "building" until the whole plan is applied, then "up"
    nodes: dict[str, str]  # node → namespace
    plan: list[str] = field(default_factory=list)  # rendered ops, to tell what differs later
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    pids: list[int] = field(default_factory=list)  # processes the lab started (responders)

    @property
    def namespaces(self) -> list[str]:
        return list(self.nodes.values())


def state_dir() -> str:
    return os.environ.get("NETLAB_STATE_DIR", STATE_DIR)


def state_path(lab: str) -> str:
    return os.path.join(state_dir(), f"{lab}.json")


def responder_log_path(lab: str) -> str:
    """Where the lab's responder process writes (removed with the state)."""
    return os.path.join(state_dir(), f"{lab}.responders.log")


def _ensure_dir() -> None:
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)


def write_state(state: LabState) -> None:
    _ensure_dir()
    fd, tmp = tempfile.mkstemp(dir=state_dir(), prefix=f".{state.lab}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600: state is root's business
            json.dump(asdict(state), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_path(state.lab))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(lab: str) -> LabState | None:
    try:
        with open(state_path(lab)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable or torn: `down` falls back to ownership marks
    try:
        return LabState(**data)
    except TypeError:
        return None


def remove_state(lab: str) -> None:
    for path in (state_path(lab), responder_log_path(lab)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def all_states() -> list[LabState]:
    try:
        names = sorted(os.listdir(state_dir()))
    except FileNotFoundError:
        return []
    states = [read_state(n[: -len(".json")]) for n in names if n.endswith(".json")]
    return [s for s in states if s is not None]


@contextlib.contextmanager
def lab_lock(lab: str) -> Iterator[None]:
    """Serialise up/down of one lab across processes.

    Fix: the lock file used to stay forever, so every `down` of any name (even of a lab
    that was never up) and every failed `up` left a `.LAB.lock` in /run/netlab. Now the
    holder removes it when the lab has no state left; a process that waited on the
    removed file notices (its inode is no longer the path's) and locks the new one."""
    _ensure_dir()
    path = os.path.join(state_dir(), f".{lab}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            if not os.path.exists(state_path(lab)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            os.close(fd)
