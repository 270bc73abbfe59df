"""Run a plan through a kernel driver, stage by stage; on any failure or interruption,
undo what was done, in reverse, before reporting."""

from __future__ import annotations

import threading
from collections.abc import Callable

from netlab import interrupts, timing
from netlab.errors import ApplyError, Interrupted
from netlab.kernel.driver import KernelDriver, OpFailed
from netlab.plan.build import Plan
from netlab.plan.ops import CreateLink, DeleteNetns, Op, SetLink


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
    settled = False
    try:
        for stage, ops in plan.by_stage():
            if stage in AFTER_LINKS_UP and not settled:
                current, settled = "links", _links_up(plan, driver)
            current = stage  # named in the message if Ctrl-C lands during this stage
            with timing.phase(f"{stage}: {len(ops)} ops"):
                driver.apply(ops, on_done)
        if not settled:
            current = "links"
            _links_up(plan, driver)
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


# The lab's own commands run once its links are up (they may send through them).
AFTER_LINKS_UP = frozenset({"commands"})


def _links_up(plan: Plan, driver: KernelDriver) -> bool:
    """Wait for the kernel to have brought up every link the plan brings up (it does part of
    that later, on its own: kernel/settle.py)."""
    links = [op for op in plan.ops if isinstance(op, (CreateLink, SetLink))]
    with timing.phase(f"links up: {len(links)} ops"):
        driver.settle(links)
    return True


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
