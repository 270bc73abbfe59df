"""Apply a reconcile through the kernel driver, stage by stage. If the kernel refuses a
step, or SIGINT/SIGTERM arrives, the lab is put back as it was: what is true now (the
old plan, less what the done steps took away, plus what they made) is reconciled back
into the old plan, with signals deferred, and the error says what failed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from netlab import interrupts, processes
from netlab.errors import ApplyError, Interrupted
from netlab.kernel.driver import KernelDriver, OpFailed
from netlab.plan.ops import CreateLink, DeleteNetns, Op, SetLink, VethType
from netlab.plan.removal import Remove
from netlab.reconcile.diff import Reconcile, Step, SysctlDefault, identity, reconcile


class ReconcileFailed(ApplyError):
    """A step of a reconcile was refused; `restored` says whether the lab is back as it was."""

    def __init__(self, lab: str, what: str, reason: str, restore_error: str | None = None) -> None:
        self.what, self.reason, self.rolled_back = what, reason, restore_error is None
        self.restored = restore_error is None
        tail = (
            f"; lab {lab} was put back as it was"
            if restore_error is None
            else f"; putting lab {lab} back failed too ({restore_error}): `netlab up --replace FILE` rebuilds it"
        )
        Exception.__init__(self, f"failed: {what}: {reason}{tail}")


def _links_made(done: Sequence[Step]) -> list[Op]:
    """The link ops the steps made that are still true once all of them ran: a link a step
    made (a bridge's port, released when the bridge goes) may go with a later one (its
    namespace deleted)."""
    links: dict[tuple[str, str], Op] = {}
    for step in done:
        for op in step.gone:
            if isinstance(op, (CreateLink, SetLink)):
                links.pop((op.ns, op.name), None)
        for op in step.made:
            if isinstance(op, (CreateLink, SetLink)):
                links[(op.ns, op.name)] = op
    return list(links.values())


def apply_reconcile(
    rec: Reconcile,
    old: Sequence[Op],
    driver: KernelDriver,
    sysctl_default: SysctlDefault,
    progress: Callable[[Op], None] | None = None,
) -> list[Step]:
    """Run every step; returns those done. On failure or a signal, restores the old plan."""
    done: list[Step] = []
    current = ""
    try:
        for label, steps in rec.stages():
            current = label
            _run_stage(steps, driver, done, progress)
        current = "links"  # the links it brought up, up as the kernel sees them (kernel/settle.py)
        driver.settle(_links_made(done))
    except OpFailed as err:
        restore_error = _restore(rec.lab, old, done, driver, sysctl_default)
        what = f"{err.op.what or err.op.ns} ({err.op.brief()})"
        raise ReconcileFailed(rec.lab, what, err.reason, restore_error) from None
    except BaseException as err:
        signum = interrupts.signum_of(err)
        if signum is None:
            _restore(rec.lab, old, done, driver, sysctl_default)
            raise
        restore_error = _restore(rec.lab, old, done, driver, sysctl_default)
        back = "it was put back as it was" if restore_error is None else f"putting it back failed: {restore_error}"
        raise Interrupted(
            f"reconcile of lab {rec.lab} interrupted by {interrupts.name_of(signum)} at {current}; {back}", signum
        ) from None
    return done


def _run_stage(
    steps: list[Step], driver: KernelDriver, done: list[Step], progress: Callable[[Op], None] | None
) -> None:
    by_op = {id(s.op): s for s in steps}
    lock = threading.Lock()

    def on_done(op: Op) -> None:
        with lock:  # drivers call this from worker threads
            done.append(by_op[id(op)])
        if progress:
            progress(op)

    doomed = [s.op.ns for s in steps if isinstance(s.op, DeleteNetns)]
    if doomed:
        # a process inside (an `exec` command, a shell) would keep the namespace alive
        processes.end([pid for pids in driver.processes(doomed).values() for pid in pids], grace=2.0)
        # The kernel removes a deleted namespace's devices later (cleanup_net, on its own
        # worker): a veth's end in a namespace that stays would linger, and making it again
        # (a node rebuilt) fail with EEXIST. Deleting the pair first is synchronous.
        crossing = [Remove(op.ns, op.what, op=op) for s in steps for op in s.gone if _crosses(op, set(doomed))]
        if crossing:
            driver.apply(crossing, lambda _op: None)
        driver.delete_namespaces(doomed)
        for s in steps:
            on_done(s.op)
        return
    driver.apply([s.op for s in steps], on_done)


def _crosses(op: Op, doomed: set[str]) -> bool:
    """A veth with one end in a namespace about to be deleted and the other in one that stays."""
    return (
        isinstance(op, CreateLink)
        and isinstance(op.type, VethType)
        and (op.ns in doomed) != (op.type.peer_ns in doomed)
    )


def present_after(old: Sequence[Op], done: Sequence[Step]) -> list[Op]:
    """The ops true once `done` ran on a lab built with `old` (made ones last, in order)."""
    present = list(old)
    for step in done:
        for op in step.gone:
            key = identity(op)
            for i, p in enumerate(present):
                if p is op or identity(p) == key:
                    del present[i]
                    break
        present += step.made
    return present


def _restore(
    lab: str, old: Sequence[Op], done: list[Step], driver: KernelDriver, sysctl_default: SysctlDefault
) -> str | None:
    """Reconcile what is there now back into `old`; None if that worked, else why not."""
    if not done:
        return None
    return put_back(lab, present_after(old, done), old, driver, sysctl_default)


def put_back(
    lab: str, present: Sequence[Op], old: Sequence[Op], driver: KernelDriver, sysctl_default: SysctlDefault
) -> str | None:
    """Reconcile a lab whose kernel objects are `present` back into `old`, signals
    deferred; None if that worked, else why not."""
    with interrupts.deferred():  # a second Ctrl-C must not cut the restore short
        back = reconcile(lab, present, old, sysctl_default)
        try:
            for _label, steps in back.stages():
                _run_stage(steps, driver, [], None)
        except OpFailed as err:
            return f"{err.op.brief()}: {err.reason}"
    return None
