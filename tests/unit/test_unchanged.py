"""netlab.unchanged: `up` of a lab up from exactly this file, told from its state without
loading the file — and every way the inputs can differ, which must take the full way."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from netlab import cli, unchanged
from netlab.state import LabState, read_state, write_state


def _lab(tmp_path: Path, text: str = "name: same\nnodes:\n  a: {}\n") -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return path


def _up_state(path: Path, inputs: dict[str, str], variant: str | None = None, status: str = "up") -> None:
    name = "same" if variant is None else f"same-{variant}"
    source = str(path.resolve())
    write_state(LabState(name, source, "fp", status, {"a": f"{name}.a"}, variant=variant, inputs=inputs))


@pytest.fixture
def as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("NETLAB_STATE_DIR", str(state))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return state


def test_inputs_are_the_code_and_every_file_read(tmp_path: Path) -> None:
    lab, rules = _lab(tmp_path), tmp_path / "gw.nft"
    rules.write_text("table inet t {}\n")
    found = unchanged.inputs(str(lab), [str(rules)])
    assert list(found) == [unchanged.CODE, str(lab), str(rules)]
    assert unchanged.same_now(found) and unchanged.still(found) == found
    rules.write_text("table inet u {}\n")
    assert not unchanged.same_now(found) and unchanged.still(found) == {}
    assert unchanged.inputs(str(lab), [str(tmp_path / "gone.nft")]) == {}


def test_other_code_is_another_input(tmp_path: Path) -> None:
    found = unchanged.inputs(str(_lab(tmp_path)), [])
    assert not unchanged.same_now({**found, unchanged.CODE: "0" * 64})
    assert not unchanged.same_now({unchanged.CODE: found[unchanged.CODE]})  # no file: nothing to tell from


def test_a_pipe_is_neither_peeked_nor_hashed(tmp_path: Path) -> None:
    fifo = tmp_path / "lab.yaml"
    os.mkfifo(fifo)
    # no writer: opening it for reading in blocking mode would wait for ever
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.extend([unchanged.peek_lab_name(fifo), unchanged.digest(str(fifo))]))
    worker.start()
    worker.join(5)
    assert done == [None, None]


def test_up_of_the_same_inputs_is_answered_from_the_state(tmp_path: Path, as_root: Path) -> None:
    lab = _lab(tmp_path)
    _up_state(lab, unchanged.inputs(str(lab.resolve()), []))
    assert cli._up_from_this_file(str(lab), None) == "same"
    state = read_state("same")
    assert state is not None and state.status == "up"  # only read


@pytest.mark.parametrize(
    "why",
    ["edited", "no inputs recorded", "another variant", "not up", "another file", "not root", "no state"],
)
def test_anything_else_takes_the_full_way(
    tmp_path: Path, as_root: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    lab = _lab(tmp_path)
    inputs = unchanged.inputs(str(lab.resolve()), [])
    if why == "edited":
        _up_state(lab, inputs)
        lab.write_text(lab.read_text() + "# a comment\n")
    elif why == "no inputs recorded":  # a state an older netlab wrote
        _up_state(lab, {})
    elif why == "another variant":  # built as `same` --variant v, the file now named so itself
        lab.write_text("name: same-v\nnodes:\n  a: {}\n")
        source = str(lab.resolve())
        inputs = unchanged.inputs(source, [])
        write_state(LabState("same-v", source, "fp", "up", {"a": "same-v.a"}, variant="v", inputs=inputs))
        assert cli._up_from_this_file(str(lab), "v") is None  # a lab `same-v-v`: none
    elif why == "not up":
        _up_state(lab, inputs, status="reconciling")
    elif why == "another file":
        other = tmp_path / "other" / "lab.yaml"
        other.parent.mkdir()
        other.write_text(lab.read_text())
        _up_state(other, unchanged.inputs(str(other), []))
    elif why == "not root":
        _up_state(lab, inputs)
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli._up_from_this_file(str(lab), None) is None
