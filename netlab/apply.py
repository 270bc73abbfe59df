"""Run a plan through a kernel driver, stage by stage; on any failure or interruption,
undo what was done, in reverse, before reporting."""

from __future__ import annotations

import threading
from collections.abc import Callable

from netlab import interrupts, timing
from netlab.errors import ApplyError, Interrupted
from netlab.kernel.driver import KernelDriver, OpFailed
from netlab.plan.build import Plan
from netlab.plan.ops import DeleteNetns, Op


def apply_plan(plan: Plan, driver: KernelDriver, progress: Callable[[Op], None] | None = None) -> list[Op]:
    """Apply every op of the plan; returns them in the order they were done."""
    done: list[Op] = []
    lock = threading.Lock()

    def on_done(op: Op) -> None:
        with lock:  # drivers call this from worker threads
            done.append(op)
        if progress:
            progress(op)

    current = ""
    try:
        for stage, ops in plan.by_stage():
            current = stage  # named in the message if Ctrl-C lands during this stage
            with timing.phase(f"{stage}: {len(ops)} ops"):
                driver.apply(ops, on_done)
    except OpFailed as err:
        rollback(done, driver)
        what = err.op.what or err.op.ns
        raise ApplyError(f"{what} ({err.op.brief()})", err.reason, rolled_back=True) from None
    except BaseException as err:
        rollback(done, driver)
        signum = interrupts.signum_of(err)
        if signum is None:
            raise
        raise Interrupted(
            f"up of lab {plan.lab} interrupted by {interrupts.name_of(signum)} while creating "
            f"{current}; everything created so far was removed",
            signum,
        ) from None
    return done


def rollback(done: list[Op], driver: KernelDriver) -> None:
    """Undo `done` in reverse. Ops inside a namespace that is itself being deleted need no
    undo of their own: deleting the namespace removes them with it."""
    with interrupts.deferred():  # a second Ctrl-C must not cut a rollback short and strand half a lab
        undos = [u for op in reversed(done) if (u := op.undo()) is not None]
        doomed = {u.ns for u in undos if isinstance(u, DeleteNetns)}
        for undo in undos:
            if not isinstance(undo, DeleteNetns) and undo.ns not in doomed:
                driver.apply([undo], lambda _op: None)
        driver.delete_namespaces([u.ns for u in undos if isinstance(u, DeleteNetns)])
