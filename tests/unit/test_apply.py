"""apply, rollback and teardown against the fake kernel (rootless)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest.mock import patch

import pytest

from netlab.apply import apply_plan
from netlab.errors import ApplyError, Interrupted
from netlab.interrupts import Signalled
from netlab.kernel.fake import FakeDriver
from netlab.load import load_lab_text
from netlab.plan.build import build_plan
from netlab.plan.ops import AddRoute, CreateLink, DeleteNetem, Op, SetLink, SetNetem
from netlab.state import LabState, read_state, write_state
from netlab.teardown import tear_down

LAB = """
name: t
nodes:
  host:
    links:
      br0: {kind: bridge, addresses: [10.0.0.1/24]}
      v1: {peer: a:eth0, master: br0}
      v2: {peer: b:eth0, master: br0}
  a:
    links: {eth0: {addresses: [10.0.0.2/24]}}
    routes: [{to: default, via: 10.0.0.1}]
  b:
    links: {eth0: {addresses: [10.0.0.3/24]}}
    routes: [{to: default, via: 10.0.0.1}]
"""


@pytest.fixture
def plan():  # type: ignore[no-untyped-def]
    return build_plan(load_lab_text(LAB))


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NETLAB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_apply_runs_every_op_in_plan_order(plan) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver()
    done = apply_plan(plan, driver)
    assert done == list(plan.ops) == driver.applied
    assert set(driver.netns) == {"t.host", "t.a", "t.b"}
    assert driver.deleted == []


def test_kernel_refusal_rolls_back_in_reverse_and_names_the_object(plan) -> None:  # type: ignore[no-untyped-def]
    def refuse(op: Op) -> str | None:
        return "Nexthop has invalid gateway" if isinstance(op, AddRoute) and op.ns == "t.b" else None

    driver = FakeDriver(fail=refuse)
    with pytest.raises(ApplyError) as info:
        apply_plan(plan, driver)
    assert info.value.what.startswith("nodes.b.routes[0]")
    assert "Nexthop has invalid gateway" in str(info.value)
    assert info.value.rolled_back
    assert driver.netns == {}
    # created host, a, b in that order → removed b, a, host
    assert driver.deleted == ["t.b", "t.a", "t.host"]


@pytest.mark.parametrize(
    ("exc", "name", "code"),
    [
        (KeyboardInterrupt(), "SIGINT", 130),
        (Signalled(signal.SIGINT), "SIGINT", 130),
        (Signalled(signal.SIGTERM), "SIGTERM", 143),
    ],
)
def test_interrupt_rolls_back_and_says_where(plan, exc: BaseException, name: str, code: int) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver(fail=lambda op: exc if isinstance(op, CreateLink) and op.kind == "veth" else None)
    with pytest.raises(
        Interrupted,
        match=f"up of lab t interrupted by {name} while creating veths; everything created so far was removed",
    ) as info:
        apply_plan(plan, driver)
    assert info.value.exit_code == code
    assert driver.netns == {}


def test_the_links_are_waited_for_once_every_link_stage_ran(plan) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver()
    apply_plan(plan, driver)
    links = [op for op in plan.ops if isinstance(op, (CreateLink, SetLink))]
    assert driver.settled == [links]


class OrderDriver(FakeDriver):
    """Notes each stage (by its first op's kind) and each settle, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def apply(self, ops: Sequence[Op], on_done: Callable[[Op], None]) -> None:
        self.order.append(type(ops[0]).__name__)
        super().apply(ops, on_done)

    def settle(self, ops: Sequence[Op], timeout: float = 10.0) -> None:
        self.order.append("settle")
        super().settle(ops, timeout)


def test_the_lab_commands_run_once_its_links_are_up() -> None:
    plan = build_plan(load_lab_text(LAB.replace("  b:\n", '  b:\n    exec: [["true"]]\n')))
    driver = OrderDriver()
    with patch("netlab.kernel.command.run"):
        apply_plan(plan, driver)
    assert driver.order[-2:] == ["settle", "RunCommand"]


def test_links_that_do_not_come_up_fail_the_build_and_roll_it_back(plan) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver(unsettled="1 link is not up after 10 s: eth0 in t.a (operstate dormant)")
    with pytest.raises(ApplyError) as info:
        apply_plan(plan, driver)
    assert info.value.reason == "1 link is not up after 10 s: eth0 in t.a (operstate dormant)"
    assert info.value.rolled_back and driver.netns == {}


def test_failure_on_the_first_namespace_leaves_nothing(plan) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver(fail=lambda op: "File exists (EEXIST)" if op.ns == "t.host" else None)
    with pytest.raises(ApplyError, match="EEXIST"):
        apply_plan(plan, driver)
    assert driver.netns == {} and driver.deleted == []


def test_teardown_uses_state_and_marks_and_spares_unmarked(plan, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver()
    apply_plan(plan, driver)
    write_state(LabState("t", "/x.yaml", plan.fingerprint, "up", {"host": "t.host", "a": "t.a", "b": "t.b"}))
    driver.netns["t.intruder"] = None  # looks like ours, carries no mark
    driver.netns["other.host"] = "netlab:other:host"
    report = tear_down("t", driver)
    assert sorted(report.deleted) == ["t.a", "t.b", "t.host"]
    assert report.skipped == ["t.intruder"]
    assert set(driver.netns) == {"t.intruder", "other.host"}
    assert read_state("t") is None


def test_teardown_without_state_finds_namespaces_by_mark(plan) -> None:  # type: ignore[no-untyped-def]
    driver = FakeDriver()
    apply_plan(plan, driver)
    report = tear_down("t", driver)
    assert not report.had_state
    assert sorted(report.deleted) == ["t.a", "t.b", "t.host"]


def test_teardown_of_a_lab_that_is_not_up_is_a_no_op() -> None:
    report = tear_down("nothing", FakeDriver())
    assert report.deleted == [] and not report.had_state


def test_state_is_written_atomically_and_root_only(state_dir: Path) -> None:
    write_state(LabState("t", "/x.yaml", "f" * 16, "up", {"n": "t.n"}))
    path = state_dir / "t.json"
    assert path.stat().st_mode & 0o077 == 0
    assert state_dir.stat().st_mode & 0o077 == 0
    assert [p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")] == []
    state = read_state("t")
    assert state is not None and state.namespaces == ["t.n"] and state.status == "up"


def test_a_rollback_leaves_an_impairment_to_its_namespace() -> None:
    """SetNetem has an undo (DeleteNetem, for a reconcile), but a rollback deleting the
    namespace anyway sends none."""
    plan = build_plan(
        load_lab_text(
            LAB.replace(
                "links: {eth0: {addresses: [10.0.0.2/24]}}",
                "links: {eth0: {addresses: [10.0.0.2/24], netem: {delay: 10ms}}}",
            )
        )
    )
    assert [op.render() for op in plan.ops if isinstance(op, SetNetem)] == [
        "tc -n t.a qdisc replace dev eth0 root netem delay 10ms"
    ]
    driver = FakeDriver(fail=lambda op: "Nexthop has invalid gateway" if isinstance(op, AddRoute) else None)
    with pytest.raises(ApplyError, match="invalid gateway"):
        apply_plan(plan, driver)
    assert driver.netns == {} and not any(isinstance(op, DeleteNetem) for op in driver.applied)


def test_the_lab_check_up_built_is_taken_down_whatever_signal_lands_while_it_takes_the_lock(  # type: ignore[no-untyped-def]
    plan, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check --up` takes down what it built when its checks end. A signal landing as that
    teardown opens the lab's lock cut it short (the lock's wait may be interrupted, for
    `down`): the lab stayed up with its lock file, and the command said "nothing was
    changed". The signal now waits for the teardown and is answered after it."""
    import os
    import signal

    from netlab import lifecycle

    driver = FakeDriver()
    apply_plan(plan, driver)
    write_state(LabState("t", "/x.yaml", plan.fingerprint, "up", {"host": "t.host", "a": "t.a", "b": "t.b"}))
    real_open = os.open
    fired: list[str] = []

    def open_then_a_signal(path: str, *args: object) -> int:
        fd = real_open(path, *args)  # type: ignore[arg-type]
        if str(path).endswith(".t.lock") and not fired:
            fired.append(str(path))
            signal.raise_signal(signal.SIGINT)  # pytest's handler: KeyboardInterrupt, once it may
        return fd

    monkeypatch.setattr(os, "open", open_then_a_signal)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.take_down_built("t", driver)
    monkeypatch.undo()
    assert fired, "the lock was never taken"
    assert driver.netns == {} and read_state("t") is None
    assert sorted(p.name for p in state_dir.iterdir()) == []  # no state, no lock file
