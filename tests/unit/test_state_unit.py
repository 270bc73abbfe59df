"""The state file, read back (rootless: a state directory of the test's own), and what
differs between two labs, key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.labdiff import key_changes, listed
from netlab.state import LabState, StateUnreadable, all_states, read_state, state_labs, write_state


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NETLAB_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_state_round_trips_with_its_source_and_hash(state_dir: Path) -> None:
    st = LabState(
        "t", "/labs/t.yaml", "f" * 16, "up", {"a": "t.a"}, source_hash="ab" * 32, spec={"name": "t", "description": "x"}
    )
    write_state(st)
    assert read_state("t") == st
    assert read_state("nope") is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b'{"lab": "t", "sou', "is not valid JSON"),
        (b"[1, 2]", "is not a netlab state (missing: everything)"),
        (b'{"lab": "t", "status": "up"}', "is not a netlab state (missing: fingerprint, nodes, source)"),
    ],
)
def test_an_unreadable_state_is_named_with_what_to_do(state_dir: Path, content: bytes, why: str) -> None:
    (state_dir / "t.json").write_bytes(content)
    with pytest.raises(StateUnreadable) as info:
        read_state("t")
    assert str(info.value).startswith(f"the state file of lab t ({state_dir}/t.json) {why}")
    assert "run `netlab down t`" in str(info.value)
    write_state(LabState("u", "/u.yaml", "0" * 16, "up", {}))
    states, broken = all_states()
    assert [s.lab for s in states] == ["u"] and [e.lab for e in broken] == ["t"]
    assert state_labs() == ["t", "u"]


def test_key_changes_cover_every_key() -> None:
    old = {
        "name": "x",
        "description": "a",
        "nodes": {"n1": {"mtu": 1500}, "n2": {}},
        "checks": [{"name": "c1"}, {"name": "c2"}],
    }
    new = {"name": "x", "description": "b", "nodes": {"n1": {"mtu": 1400}, "n3": {}}, "checks": [{"name": "c1"}]}
    assert key_changes(old, new) == [
        '~ description: "a" → "b"',
        "~ nodes.n1.mtu: 1500 → 1400",
        "- nodes.n2",
        "+ nodes.n3: {}",
        '- checks[1]: {"name": "c2"}',
    ]
    assert key_changes(old, old) == []
    assert listed([f"~ k{i}" for i in range(25)])[-1] == "  … 5 more"


@pytest.mark.parametrize(("module", "call"), [("os", "open"), ("fcntl", "flock"), ("os", "fstat"), ("os", "close")])
def test_a_signal_at_any_step_of_the_lock_leaves_no_lock_file(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, module: str, call: str
) -> None:
    # SIGINT right after the step returns (pytest's handler: KeyboardInterrupt), the way
    # `check --up` met it at a random moment and left .LAB.lock behind.
    import fcntl
    import os
    import signal

    from netlab.state import lab_lock

    owner = {"os": os, "fcntl": fcntl}[module]
    real = getattr(owner, call)
    fired: list[str] = []

    def then_a_signal(*args: object) -> object:
        result = real(*args)
        if not fired:
            fired.append(call)
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(owner, call, then_a_signal)
    with pytest.raises(KeyboardInterrupt), lab_lock("t"):
        signal.raise_signal(signal.SIGINT)  # when the step raised nothing, the body is interrupted
    monkeypatch.undo()
    assert fired == [call]
    assert sorted(p.name for p in state_dir.iterdir()) == []


def test_a_lock_whose_lab_is_up_stays_for_the_next_holder(state_dir: Path) -> None:
    from netlab.state import lab_lock

    with lab_lock("t"):
        write_state(LabState("t", "/labs/t.yaml", "f" * 16, "up", {"a": "t.a"}))
    assert (state_dir / ".t.lock").exists()
