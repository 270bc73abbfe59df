"""Remove a lab: from its state file when there is one, and always also by ownership
mark, so a crash, `kill -9` or a lost state file never strands namespaces."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netlab import interrupts, processes
from netlab.errors import Interrupted, UsageError, require_root
from netlab.naming import NETNS_DIR, is_lab_file, split_netns_name
from netlab.probes.responders import is_running, responders_of, stop_responders
from netlab.state import StateUnreadable, lab_lock, read_state, remove_state, state_labs, state_path

if TYPE_CHECKING:  # `down` of a lab that left nothing must not pay for the driver's imports
    from netlab.kernel.driver import KernelDriver


@dataclass
class TeardownReport:
    lab: str
    deleted: list[str] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # look like the lab's but carry no mark
    had_state: bool = False
    unreadable: StateUnreadable | None = None  # the state file was there but useless (removed now)


def nothing_of(lab: str) -> bool:
    """True when the lab has left no trace at all — no state file (readable or not), no
    namespace named like its own, no responder tagged with it — so `down` has nothing to
    look at more closely (and needs neither the kernel driver nor the lab schema)."""
    if os.path.lexists(state_path(lab)):
        return False
    if any(name.startswith(f"{lab}.") for name in _netns_names()):
        return False
    return not responders_of(lab)


def _netns_names() -> list[str]:
    try:
        return os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []


def labs_present(marks: dict[str, tuple[str, str] | None]) -> set[str]:
    return {mark[0] for mark in marks.values() if mark}


def tear_down(lab: str, driver: KernelDriver, marks: dict[str, tuple[str, str] | None] | None = None) -> TeardownReport:
    unreadable = None
    try:
        state = read_state(lab)
    except StateUnreadable as e:  # the marks tell what is the lab's
        state, unreadable = None, e
    report = TeardownReport(lab, had_state=state is not None or unreadable is not None, unreadable=unreadable)
    # The lab's responders first (they hold sockets in its namespaces): those the state
    # lists, and any found by their argv tag when the state is lost or incomplete.
    report.stopped = stop_lab_processes(lab, state.pids if state else [])
    doomed = set(state.namespaces) if state else set()
    if marks is None:
        # Read marks only where they decide something: names that look like this lab's
        # but are not in its state (reading every namespace costs a netlink dump each).
        marks = driver.namespaces(lambda name: name.startswith(f"{lab}.") and name not in doomed)
    for name, mark in marks.items():
        if mark and mark[0] == lab:
            doomed.add(name)
        elif mark is None and name not in doomed and (split_netns_name(name) or ("", ""))[0] == lab:
            report.skipped.append(name)
    # A process still inside a lab namespace (an `exec` command orphaned by `kill -9` of
    # `up`, a shell opened with `netlab exec`) would keep the namespace alive after its
    # name is gone: end them first, by PID, and only those inside this lab's namespaces.
    inside = [pid for pids in driver.processes(sorted(doomed)).values() for pid in pids]
    report.stopped += processes.end(inside, grace=2.0)
    report.deleted = driver.delete_namespaces(sorted(doomed))
    remove_state(lab)
    return report


def stop_lab_processes(lab: str, pids: list[int]) -> list[int]:
    """Stop the lab's responder processes; a listed PID that is no longer a responder
    (reused by another program) is left alone."""
    mine = sorted({pid for pid in pids if is_running(pid)} | set(responders_of(lab)))
    for pid in mine:
        stop_responders(pid, timeout=2.0)
    return mine


def resolve_lab_name(target: str, variant: str | None = None) -> str:
    """`down`/`status` take a lab name or the lab file that defines it (with `variant`:
    the name of that variant's lab, NAME-VARIANT)."""
    if is_lab_file(target):
        if not os.path.exists(target):
            raise UsageError(f"no such lab file: {target}")
        from netlab.load import load_lab  # the lab schema only for a file: `down NAME` needs none of it

        return load_lab(target, variant).name
    return f"{target}-{variant}" if variant else target


def down(target: str, driver: KernelDriver, variant: str | None = None) -> TeardownReport:
    """Take the lab down. A signal before the teardown starts leaves the lab as it was; one
    during it is honoured once the teardown is finished (half a lab helps nobody)."""
    require_root("down")
    lab = target
    reports: list[TeardownReport] = []
    signum: int | None = None
    try:
        lab = resolve_lab_name(target, variant)
        take_down(lab, driver, reports=reports, keep_held=True)  # the command is over once it is down
    except BaseException as err:
        signum = interrupts.signum_of(err)
        if signum is None:
            raise
        if not reports:
            raise Interrupted(
                f"down of {lab} interrupted by {interrupts.name_of(signum)} before anything was "
                "removed; it is as it was",
                signum,
            ) from None
    signum = interrupts.take_pending() or signum  # recorded during the teardown, or raised just after it
    if signum is not None:
        raise Interrupted(
            f"down of lab {lab} interrupted by {interrupts.name_of(signum)}; the teardown was "
            f"finished first: removed {len(reports[0].deleted)} namespaces",
            signum,
        )
    return reports[0]


def take_down(
    lab: str,
    driver: KernelDriver,
    marks: dict[str, tuple[str, str] | None] | None = None,
    reports: list[TeardownReport] | None = None,
    keep_held: bool = False,
) -> TeardownReport:
    """tear_down under the lab's lock; a signal waits until the teardown is finished
    (and, with `keep_held`, until the caller releases it: `down` is then over).
    `reports` receives the report as soon as it exists."""
    with lab_lock(lab):
        interrupts.hold()
        try:
            report = tear_down(lab, driver, marks)
            if reports is not None:
                reports.append(report)
            return report
        finally:
            if not keep_held:
                interrupts.release()


def down_all(driver: KernelDriver, confirm: Callable[[list[str]], None] | None = None) -> list[TeardownReport]:
    """Take down every lab found; `confirm` sees their names first and raises to remove none."""
    require_root("down")
    marks = driver.namespaces()
    labs = sorted(set(state_labs()) | labs_present(marks))
    if confirm is not None and labs:
        confirm(labs)
    reports = []
    for lab in labs:
        reports.append(take_down(lab, driver, marks))
        signum = interrupts.take_pending()
        if signum is not None:
            gone = ", ".join(r.lab for r in reports)
            raise Interrupted(
                f"down --all interrupted by {interrupts.name_of(signum)}; taken down: {gone}; "
                f"still up: {', '.join(labs[len(reports) :]) or 'none'}",
                signum,
            )
    return reports
