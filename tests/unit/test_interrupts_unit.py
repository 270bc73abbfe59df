"""netlab/interrupts.py in-process (rootless): a signal inside deferred() waits for the end
of the block, and is then handed to whoever handles signals in this program."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from netlab import interrupts
from netlab.errors import Interrupted


def test_a_signal_inside_deferred_waits_and_is_handed_back() -> None:
    # pytest's own SIGINT handling is Python's: KeyboardInterrupt. netlab borrows the
    # handler for the block only, and re-sends the signal when it ends.
    ran_to_the_end = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        ran_to_the_end.append(True)
    assert ran_to_the_end == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert interrupts.pending() is None


def test_nested_deferred_hands_it_back_once_outermost_ends() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("inner")
        steps.append("outer")
    assert steps == ["inner", "outer"]


def test_hold_does_nothing_without_netlabs_handler() -> None:
    interrupts.hold()  # a library user's signals stay theirs
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    interrupts.release()


def test_signal_names_and_exit_codes() -> None:
    assert interrupts.signum_of(KeyboardInterrupt()) == signal.SIGINT
    assert interrupts.signum_of(interrupts.Signalled(signal.SIGTERM)) == signal.SIGTERM
    assert interrupts.signum_of(ValueError()) is None
    assert Interrupted("x", signal.SIGINT).exit_code == 130
    assert Interrupted("x", signal.SIGTERM).exit_code == 143


class _SignalOnSetName:
    """A class attribute whose __set_name__ is where the signal lands, as CI saw it when a
    SIGTERM arrived while `check` imported netlab.probes.hops (a dataclass's Field)."""

    def __set_name__(self, owner: type, name: str) -> None:
        signal.raise_signal(signal.SIGTERM)


def _build_a_class_under_a_signal() -> BaseException:
    before, was_started = {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS}, interrupts._started
    interrupts.handle_signals()
    interrupts.started()
    try:
        type("Hop", (), {"fields": _SignalOnSetName()})
    except BaseException as err:
        return err
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        interrupts._started = was_started
    raise AssertionError("the signal raised nothing")


def test_a_signal_wrapped_by_class_creation_is_still_the_signal() -> None:
    err = _build_a_class_under_a_signal()
    # Python 3.11 wraps it: RuntimeError("Error calling __set_name__ ...") from Signalled
    assert isinstance(err, interrupts.Signalled | RuntimeError), repr(err)
    assert interrupts.signum_of(err) == signal.SIGTERM, repr(err)


def test_an_error_raised_while_undoing_after_a_signal_is_that_error() -> None:
    try:
        try:
            raise interrupts.Signalled(signal.SIGTERM)
        except interrupts.Signalled:
            raise OSError("rollback failed")  # noqa: B904 - its context, not its cause
    except OSError as err:
        assert interrupts.signum_of(err) is None


def test_the_command_answers_a_wrapped_signal_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from netlab import cli

    wrapped = _build_a_class_under_a_signal()

    def main(*_a: object, **_k: object) -> int:
        raise wrapped

    monkeypatch.setattr(cli.cli, "main", main)
    assert cli._run(["check", "lab.yaml"]) == 143
    assert capsys.readouterr().err.strip() == "netlab: interrupted by SIGTERM; nothing was changed"


def test_dumping_a_lab_runs_no_python_discriminator() -> None:
    # pydantic turns an exception raised inside a Python discriminator during serialization
    # (a Ctrl-C landing there) into a warning and goes on: the signal was lost, and `up`
    # finished "successfully". links: and checks: are SerializeAsAny, so none runs.
    import sys

    from netlab.load import load_lab

    lab = load_lab("labs/flannel-vxlan.yaml")
    called: list[str] = []

    def watch(frame: object, event: str, _arg: object) -> None:
        name = getattr(getattr(frame, "f_code", None), "co_name", "")
        if event == "call" and name in ("_link_tag", "_check_tag"):
            called.append(name)

    sys.setprofile(watch)
    try:
        lab.model_dump(mode="json", by_alias=True)
    finally:
        sys.setprofile(None)
    assert called == []
    assert lab.checks and any(node.links for node in lab.nodes.values())


def test_a_signal_while_a_command_loads_its_modules_ends_it_as_at_start_up() -> None:
    """A command's lazy imports run after main() has started: a signal there must not be
    raised into the import (pydantic wraps it into a SchemaError traceback)."""
    code = (
        "import os, signal, time\n"
        "from netlab import interrupts\n"
        "interrupts.handle_signals(); interrupts.started()\n"
        "with interrupts.loading():\n"
        "    os.kill(os.getpid(), signal.SIGINT); time.sleep(5)\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (130, ""), proc
    assert proc.stderr == "netlab: interrupted by SIGINT while starting; nothing was changed\n", proc.stderr


@pytest.mark.parametrize("fork", ["os.fork", "interrupts.fork"])
def test_a_signal_during_forks_hooks_is_raised_after_the_fork(fork: str) -> None:
    """A signal landing in os.fork's at-fork hooks (logging's lock release): its exception
    is 'ignored' by fork and the signal lost (CI: check --up + SIGTERM exited 0 with that
    traceback); interrupts.fork holds it until fork returns, then raises it."""
    code = (
        "import logging, os, signal\n"
        "from netlab import interrupts\n"
        "interrupts.handle_signals(); interrupts.started()\n"
        "armed = [True]\n"
        "def hook():\n"
        "    if armed[0]:\n"
        "        armed[0] = False; os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.register_at_fork(after_in_parent=hook)\n"
        "try:\n"
        f"    pid = {fork}()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    print('lost')\n"
        "except interrupts.Signalled as err:\n"
        "    print('raised', err.name)\n"
        "os.wait()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    if fork == "os.fork":  # the failure this guards against, as Python has it
        assert proc.stdout == "lost\n" and "Exception ignored" in proc.stderr, proc
    else:
        assert (proc.stdout, proc.stderr) == ("raised SIGTERM\n", ""), proc
