"""Shell completion: `netlab completion bash|zsh|fish` prints click's script, and each
argument completes what it names — labs that are up (from /run/netns, here a directory
of our own), node names after a lab, variants and check names from the lab file — also
through the real bash script, called as bash calls it (COMP_WORDS, COMP_CWORD)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.shell_completion import BashComplete

from netlab import naming
from netlab.cli import _run, cli

REPO = Path(__file__).resolve().parents[2]
LVS = str(REPO / "labs" / "lvs-nat.yaml")


@pytest.fixture(autouse=True)
def _labs_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Labs web (nodes client, server) and db (node primary) are up, by their namespaces."""
    netns = tmp_path / "netns"
    netns.mkdir()
    for name in ("web.client", "web.server", "db.primary", "not-a-lab-namespace"):
        (netns / name).touch()
    monkeypatch.setattr(naming, "NETNS_DIR", str(netns))
    monkeypatch.setenv("NETLAB_STATE_DIR", str(tmp_path / "state"))
    return netns


def _complete(*words: str) -> list[str]:
    """What completes the last of `words` (the one being typed) after `netlab words…`,
    with $COMP_WORDS set as click's scripts set it."""
    *args, incomplete = words
    os.environ["COMP_WORDS"] = shlex.join(["netlab", *words])
    try:
        items = BashComplete(cli, {}, "netlab", "_NETLAB_COMPLETE").get_completions(list(args), incomplete)
    finally:
        del os.environ["COMP_WORDS"]
    return [item.value if item.type == "plain" else f"<{item.type}>" for item in items]


def test_commands_complete() -> None:
    assert _complete("ex") == ["exec"]
    assert "completion" in _complete("")


def _commands_with_a_lab() -> list[str]:
    """Every command whose first argument is a lab (LAB, or TARGET: a lab or its file)."""
    return [
        name
        for name, command in cli.commands.items()
        if command.params
        and isinstance(
            first := next((p for p in command.params if isinstance(p, click.Argument)), None), click.Argument
        )
        and first.name in ("lab", "target")
    ]


def test_every_command_that_takes_a_lab_completes_it() -> None:
    commands = _commands_with_a_lab()
    assert {"status", "check", "impair", "link", "report", "exec", "logs"} <= set(commands)
    for command in commands:
        assert _complete(command, "w") == ["<file>", "web"], command


@pytest.mark.parametrize("command", ["status", "down", "check", "exec", "capture", "trace", "graph", "logs"])
def test_lab_names_complete_from_the_namespaces(command: str) -> None:
    assert _complete(command, "") == ["<file>", "db", "web"]
    assert _complete(command, "w") == ["<file>", "web"]


def test_a_path_completes_as_a_file() -> None:
    assert _complete("check", "labs/") == ["<file>"]


def test_nodes_complete_after_the_lab() -> None:
    assert _complete("exec", "web", "") == ["client", "server"]
    assert _complete("exec", "web", "s") == ["server"]
    assert _complete("capture", "web", "c") == ["client:"]
    assert _complete("trace", "db", "--from", "") == ["primary"]
    assert _complete("exec", "nope", "") == []
    assert _complete("impair", "web", "s") == ["server:"] and _complete("link", "db", "") == ["primary:"]
    assert _complete("logs", "web", "") == ["client", "server", "exec", "responders"]
    assert _complete("logs", "web", "r") == ["responders"]


def test_variants_and_checks_complete_from_the_lab_file() -> None:
    # an option waiting for its value: click's own parse of the line has nothing; the words do
    assert _complete("check", LVS, "--variant", "") == ["dnat-only", "snat-without-conntrack"]
    assert _complete("up", LVS, "--variant", "snat") == ["snat-without-conntrack"]
    checks = _complete("check", LVS, "--variant", "dnat-only", "--only", "")
    assert "curl 10.10.0.1:8410 gets no answer (timeout)" in checks
    assert _complete("check", LVS, "--only", "VIP is local") == ["the VIP is local on the director"]


def test_a_lab_file_that_is_not_yaml_offers_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks: [unclosed\n")
    assert _complete("check", str(bad), "--only", "") == []
    assert _complete("check", str(bad), "--variant", "") == []


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef netlab"), ("fish", "complete --no-files --command netlab")],
)
def test_completion_prints_the_shells_script(capsys: pytest.CaptureFixture[str], shell: str, marker: str) -> None:
    assert _run(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert marker in script and "_NETLAB_COMPLETE" in script


@pytest.fixture
def netlab_here(tmp_path: Path, _labs_up: Path) -> Path:
    """An executable `netlab` (this checkout's) that sees the labs of _labs_up, in a directory of its own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    netlab = bin_dir / "netlab"
    netlab.write_text(
        f"#!{sys.executable}\n"
        "from netlab import naming\n"
        f"naming.NETNS_DIR = {str(_labs_up)!r}\n"
        "from netlab.cli import main\n"
        "main()\n"
    )
    netlab.chmod(0o755)
    return netlab


def _script(shell: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "netlab.cli", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout


def test_the_bash_script_completes_through_comp_words(netlab_here: Path) -> None:
    """bash sources the script and calls its function as it would on <TAB>, with a
    `netlab` that is this checkout: COMPREPLY holds the nodes of lab web."""
    netlab = netlab_here
    script = _script("bash")
    driver = (
        f"{script}\n"
        f"COMP_WORDS=(netlab exec web ''); COMP_CWORD=3\n"
        f"_netlab_completion {netlab} '' web\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", driver],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.split() == ["client", "server"], done.stderr


def test_the_fish_script_completes_with_fishs_own_completer(netlab_here: Path, tmp_path: Path) -> None:
    """fish sources the script and asks its completer what `netlab …<TAB>` offers
    (`complete -C`): commands, labs, the nodes of a lab, a lab's node for NODE:IF."""
    if shutil.which("fish") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fish is missing: scripts/setup installs it")
        pytest.skip("fish is not installed (scripts/setup installs it)")
    script = tmp_path / "netlab.fish"
    script.write_text(_script("fish"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{netlab_here.parent}:{os.environ['PATH']}"}

    def offered(line: str) -> list[str]:
        done = subprocess.run(
            ["fish", "--no-config", "-c", f"source {script}; complete -C {shlex.quote(line)}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return [entry.split("\t")[0] for entry in done.stdout.splitlines()]

    assert offered("netlab ex") == ["exec"]
    assert offered("netlab exec w") == ["web"]
    assert offered("netlab exec web ") == ["client", "server"]
    assert offered("netlab impair db ") == ["primary:"]
