"""What the CLI says: counts in singular and plural, why a read-only command needs root,
the VM hint's working command, validate not speaking of creating, -V."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netlab import __version__
from netlab.cli import cli
from netlab.errors import NotRoot
from netlab.kernel import features
from netlab.wording import plural

REPO = Path(__file__).resolve().parents[2]


def test_plural() -> None:
    assert plural(1, "node") == "1 node"
    assert plural(0, "node") == "0 nodes"
    assert plural(2, "process", "processes") == "2 processes"
    assert plural(1, "process", "processes") == "1 process"


def test_short_version_option() -> None:
    result = CliRunner().invoke(cli, ["-V"])
    assert result.exit_code == 0 and result.output == f"netlab, version {__version__}\n"


def test_validate_says_one_node_and_never_created(tmp_path: Path) -> None:
    good = tmp_path / "one.yaml"
    good.write_text("name: one\nnodes:\n  a: {}\n")
    result = CliRunner().invoke(cli, ["validate", str(good)], standalone_mode=False)
    assert result.return_value == 0 and f"✓ {good}: lab one — 1 node, " in result.output
    assert "1 nodes" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnodes:\n  a: {linkz: {}}\n")
    result = CliRunner().invoke(cli, ["validate", str(bad)], standalone_mode=False)
    assert result.return_value == 2
    assert result.output.splitlines()[0] == "1 problem in the lab:"
    assert "created" not in result.output


@pytest.mark.parametrize("args", [["status"], ["check", "some-lab"]])
def test_read_only_commands_say_why_they_need_root(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, standalone_mode=False)
    assert isinstance(result.exception, NotRoot)
    assert (
        str(result.exception) == f"`netlab {args[0]}` needs root to read the lab's network namespaces; run it with sudo"
    )


def test_up_still_says_it_changes_namespaces() -> None:
    result = CliRunner().invoke(cli, ["up", str(REPO / "labs" / "docker-bridge.yaml")], standalone_mode=False)
    assert isinstance(result.exception, NotRoot)
    assert "`netlab up` changes network namespaces and needs root" in str(result.exception)


def test_missing_feature_hint_gives_the_working_vm_command() -> None:
    hint = features._GET_KERNEL
    assert "`netlab vm run -- netlab check --up FILE [--variant V]`" in hint
    assert "netlab up" not in hint


def test_down_all_without_a_terminal_needs_yes() -> None:
    from netlab.cli import _confirm_down_all
    from netlab.errors import UsageError

    with pytest.raises(
        UsageError,
        match=r"\(2 labs would be taken down: a, b\); nothing was removed: without a "
        r"terminal to ask on, give --yes",
    ):
        _confirm_down_all(["a", "b"])  # pytest's stdin is no terminal


@pytest.mark.parametrize(("answer", "removes"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_down_all_asks_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: str, removes: bool
) -> None:
    import io
    import sys

    from netlab.cli import _confirm_down_all
    from netlab.errors import UsageError

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty(answer))
    monkeypatch.setattr(sys, "stdout", Tty())
    if removes:
        _confirm_down_all(["lab1"])
    else:
        with pytest.raises(UsageError, match="nothing was removed"):
            _confirm_down_all(["lab1"])
    asked = capsys.readouterr().err
    assert "1 lab would be taken down: lab1" in asked and "take them all down? [y/N]" in asked


def _all_commands() -> list[tuple[str, click.Command]]:
    """Every command people run (not the hidden ones netlab runs itself, e.g. over ssh)."""
    found: list[tuple[str, click.Command]] = []
    for name, command in cli.commands.items():
        if command.hidden:
            continue
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    return found


@pytest.mark.parametrize(("name", "command"), _all_commands(), ids=[n for n, _ in _all_commands()])
def test_every_commands_help_teaches_by_examples(name: str, command: click.Command) -> None:
    """--help of every command (and subcommand) ends its text with examples to copy."""
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    examples = result.output.split("Examples:", 1)
    assert len(examples) == 2, f"netlab {name} --help has no Examples:"
    lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
    assert any(line.startswith(("netlab ", "sudo netlab ")) or "netlab " in line for line in lines[:3]), lines
