"""What netlab has built: one JSON file per lab in /run/netlab (root-only, written
atomically), so `down` and `status` work from any later process. /run is a tmpfs:
after a reboot both the state and the namespaces are gone, which is consistent.

A state file that exists but cannot be read (empty, truncated, not netlab's) is never
taken for "no lab": every command that meets it raises StateUnreadable, which names the
file and what to do (`down` still works: it finds the lab by its namespaces' marks)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from netlab import interrupts
from netlab.errors import NetlabError
from netlab.naming import state_dir


@dataclass
class LabState:
    lab: str
    source: str  # absolute path of the lab file
    fingerprint: str  # netlab.plan.build.fingerprint of the lab content
    # "building" until the whole plan is applied, then "up"; plan, ops and spec are
    # recorded with "up" (only a lab that is up is compared or reconciled)
    status: str
    nodes: dict[str, str]  # node → namespace
    plan: list[str] = field(default_factory=list)  # rendered ops, to tell what differs later
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    pids: list[int] = field(default_factory=list)  # processes the lab started (responders)
    source_hash: str = ""  # sha256 of the lab file's bytes when the lab was built
    spec: dict[str, Any] = field(default_factory=dict)  # the lab as built (lab.render.lab_data), to diff
    # a lab with `cluster:`: its services, endpoints and pods (netlab.expand.cluster.cluster_data)
    cluster: dict[str, Any] | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)  # the plan as built (plan.record), to reconcile
    variant: str | None = None  # the lab file's variant it was built as
    updated: str = ""  # when the last reconcile changed it ("" if never)
    reconciles: int = 0  # how many times it was reconciled since it was built
    features: list[str] = field(default_factory=list)  # kernel features probed for it (netlab.kernel.features)
    # what it was built from, when that held still during the build (netlab.unchanged): an
    # `up` of the same inputs is answered from here
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        return list(self.nodes.values())


class StateUnreadable(NetlabError):
    """A lab's state file exists but says nothing netlab can use."""

    def __init__(self, lab: str, path: str, why: str) -> None:
        self.lab, self.path, self.why = lab, path, why
        super().__init__(
            f"the state file of lab {lab} ({path}) {why}, so netlab cannot tell what the lab "
            f"has; run `netlab down {lab}` (it finds the lab's namespaces by their netlab mark and "
            "removes the file), then `netlab up` again"
        )


def file_hash(path: str) -> str:
    """sha256 of the lab file's bytes ("" if it cannot be read): which content was built."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def state_path(lab: str) -> str:
    return os.path.join(state_dir(), f"{lab}.json")


def responder_log_path(lab: str) -> str:
    """Where the lab's responder process writes (removed with the state)."""
    return os.path.join(state_dir(), f"{lab}.responders.log")


def exec_log_path(lab: str) -> str:
    """Where the output of the lab's `exec:` commands is kept (removed with the state)."""
    return os.path.join(state_dir(), f"{lab}.exec.log")


def _ensure_dir() -> None:
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)


def write_state(state: LabState) -> None:
    _ensure_dir()
    fd, tmp = tempfile.mkstemp(dir=state_dir(), prefix=f".{state.lab}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600: state is root's business
            # Its fields are plain data already (no asdict deep copy), and without indent
            # json's C encoder writes it: for a 500-pod lab 10 ms instead of 80.
            f.write(json.dumps({k.name: getattr(state, k.name) for k in fields(state)}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_path(state.lab))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


StateStamp = tuple[int, int, int]  # a version of a state file: inode, mtime, size


def state_stamp(lab: str) -> StateStamp | None:
    """Which version of the lab's state file is there (write_state replaces the file, so
    a write makes another); None without one."""
    try:
        st = os.stat(state_path(lab))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_state(lab: str) -> LabState | None:
    """The lab's state; None if it has none. Raises StateUnreadable for a file that is
    there but unreadable, empty, torn or not a netlab state."""
    path = state_path(lab)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateUnreadable(lab, path, f"cannot be read ({e.strerror})") from None
    if not raw.strip():
        raise StateUnreadable(lab, path, "is empty")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise StateUnreadable(lab, path, f"is not valid JSON ({e}; truncated?)") from None
    names = {f.name for f in fields(LabState)}
    required = {f.name for f in fields(LabState) if f.default is f.default_factory is dataclasses.MISSING}
    if not isinstance(data, dict) or not required <= data.keys():
        missing = sorted(required - data.keys()) if isinstance(data, dict) else ["everything"]
        raise StateUnreadable(lab, path, f"is not a netlab state (missing: {', '.join(missing)})")
    return LabState(**{k: v for k, v in data.items() if k in names})


def remove_state(lab: str) -> None:
    for path in (state_path(lab), responder_log_path(lab), exec_log_path(lab)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def state_labs() -> list[str]:
    """Names of the labs that have a state file (readable or not)."""
    try:
        names = sorted(os.listdir(state_dir()))
    except FileNotFoundError:
        return []
    return [n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith(".")]


def all_states() -> tuple[list[LabState], list[StateUnreadable]]:
    """Every lab's state, and the state files that could not be read."""
    states, broken = [], []
    for lab in state_labs():
        try:
            st = read_state(lab)
        except StateUnreadable as e:
            broken.append(e)
            continue
        if st is not None:
            states.append(st)
    return states, broken


@contextlib.contextmanager
def lab_lock(lab: str) -> Iterator[None]:
    """Serialise up/down of one lab across processes.

    The holder removes the lock file when the lab has no state left; a process that
    waited on the removed file notices (its inode is no longer the path's) and locks the
    new one. The file is created and removed with signals deferred and the descriptor is
    known to the `finally` from the moment it exists, so a signal at any moment (even
    while waiting for another holder) leaves no lock file behind."""
    _ensure_dir()
    path = os.path.join(state_dir(), f".{lab}.lock")
    held: list[int] = []
    try:
        _take_lock(path, held)
        yield
    finally:
        with interrupts.deferred():
            _drop_lock(held, path, lab)


def _take_lock(path: str, held: list[int]) -> None:
    while True:
        with interrupts.deferred():
            held[:] = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600)]
        interrupts.honour_pending()
        fcntl.flock(held[0], fcntl.LOCK_EX)  # the wait for another holder: Ctrl-C may end it
        if _still_the_file(held[0], path):
            return
        with interrupts.deferred():
            os.close(held.pop())


def _still_the_file(fd: int, path: str) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


def _drop_lock(held: list[int], path: str, lab: str) -> None:
    """Remove the file if this process holds it (or can take it now: a signal may have
    come before the wait ended) and the lab has no state; close it either way."""
    if not held:
        return
    fd = held.pop()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _still_the_file(fd, path) and not os.path.exists(state_path(lab)):
            os.unlink(path)
    except BlockingIOError:
        pass  # another process holds it and removes it when it is done
    finally:
        os.close(fd)
