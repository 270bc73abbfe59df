"""netlab.nodeexec without a lab: a command looked up as a shell does (127 not found, 126
not executable), NODE as a name or a GLOB, the summary of several nodes' exit statuses,
and how each shell is started so that its prompt names LAB.NODE."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netlab import nodeexec
from netlab.errors import UsageError
from netlab.nodeexec import CommandError, NodeRun


def test_a_command_on_path_is_runnable(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    nodeexec.check_runnable("tool", path=str(tmp_path))
    nodeexec.check_runnable(str(tool))


@pytest.mark.parametrize(
    ("argv0", "code", "words"),
    [
        ("nowhere", 127, "nowhere: command not found"),
        ("plain", 126, "plain: cannot run {dir}/plain: permission denied"),
        ("{dir}/plain", 126, "{dir}/plain: permission denied"),
        ("{dir}/missing", 127, "{dir}/missing: no such file or directory"),
        ("{dir}", 126, "{dir}: is a directory"),
    ],
)
def test_what_cannot_run_exits_as_a_shell_would(tmp_path: Path, argv0: str, code: int, words: str) -> None:
    plain = tmp_path / "plain"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    with pytest.raises(CommandError) as caught:
        nodeexec.check_runnable(argv0.format(dir=tmp_path), path=str(tmp_path))
    assert caught.value.exit_code == code
    assert str(caught.value) == words.format(dir=tmp_path)


NODES = {"pod-1": "lab.pod-1", "pod-2": "lab.pod-2", "router": "lab.router"}


def test_a_glob_selects_the_nodes_it_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "exists", lambda _path: True)
    assert list(nodeexec.select_nodes("lab", NODES, "pod-*")) == ["pod-1", "pod-2"]
    assert list(nodeexec.select_nodes("lab", NODES, "router")) == ["router"]
    assert list(nodeexec.select_nodes("lab", NODES, None)) == ["pod-1", "pod-2", "router"]
    with pytest.raises(UsageError, match=r"lab lab has no node matching 'web-\*' \(nodes: pod-1, pod-2, router\)"):
        nodeexec.select_nodes("lab", NODES, "web-*")
    with pytest.raises(UsageError, match=r"lab lab has no node 'pod-3' \(nodes: pod-1, pod-2, router\)"):
        nodeexec.select_nodes("lab", NODES, "pod-3")


def test_a_node_whose_namespace_is_gone_is_not_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "exists", lambda path: not path.endswith("lab.pod-2"))
    with pytest.raises(UsageError, match=r"lab lab is not up \(no namespace lab.pod-2\)"):
        nodeexec.select_nodes("lab", NODES, "pod-*")


def test_the_summary_names_the_nodes_that_did_not_exit_0() -> None:
    runs = [NodeRun("a", 0), NodeRun("b", 1), NodeRun("c", 127), NodeRun("d", 1)]
    assert nodeexec.summary("x", runs) == "exec on 4 nodes of lab x: 1 exited 0, 2 exited 1 (b, d), 1 exited 127 (c)"
    assert nodeexec.exit_status(runs) == 127
    assert nodeexec.summary("x", [NodeRun("a", 0)]) == "exec on 1 node of lab x: 1 exited 0"
    assert nodeexec.summary("x", [NodeRun("a", 3), NodeRun("b", 3)]) == "exec on 2 nodes of lab x: 2 exited 3 (a, b)"
    assert nodeexec.exit_status([NodeRun("a", 0)]) == 0


def test_bash_reads_an_rc_file_that_sources_the_users_and_prefixes_the_prompt() -> None:
    launch = nodeexec.shell_launch("/bin/bash", "lab", "node1")
    try:
        assert launch.pass_fd is not None and os.get_inheritable(launch.pass_fd)
        assert launch.argv == ["/bin/bash", "--rcfile", f"/proc/self/fd/{launch.pass_fd}"]
        rc = Path(f"/proc/self/fd/{launch.pass_fd}").read_text()
        assert rc.splitlines() == [
            "[ -f ~/.bashrc ] && . ~/.bashrc",
            "PS1='[lab.node1] '\"${PS1-\\s-\\v\\$ }\"",
            f"exec {launch.pass_fd}<&-",
        ]
        assert launch.env == {"NETLAB_LAB": "lab", "NETLAB_NODE": "node1"}
    finally:
        if launch.pass_fd is not None:
            os.close(launch.pass_fd)


def test_zsh_gets_a_zdotdir_that_reads_the_users_files_and_removes_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ZDOTDIR", raising=False)
    launch = nodeexec.shell_launch("/usr/bin/zsh", "lab", "n")
    d = Path(launch.env["ZDOTDIR"])
    try:
        assert launch.argv == ["/usr/bin/zsh"]
        assert (d / ".zshenv").read_text() == f"[ -f {tmp_path}/.zshenv ] && . {tmp_path}/.zshenv\n"
        assert (d / ".zshrc").read_text().splitlines() == [
            f"[ -f {tmp_path}/.zshrc ] && . {tmp_path}/.zshrc",
            "PROMPT='[lab.n] '\"$PROMPT\"",
            f"ZDOTDIR={tmp_path}",
            f"rm -rf -- {d}",
        ]
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def test_fish_wraps_its_prompt_function_and_other_shells_get_ps1(monkeypatch: pytest.MonkeyPatch) -> None:
    fish = nodeexec.shell_launch("/usr/bin/fish", "lab", "n")
    assert fish.argv[:2] == ["/usr/bin/fish", "--init-command"]
    assert "functions -c fish_prompt __netlab_prompt" in fish.argv[2] and "echo -n '[lab.n] '" in fish.argv[2]
    monkeypatch.delenv("PS1", raising=False)
    assert nodeexec.shell_launch("/bin/dash", "lab", "n").env["PS1"] == "[lab.n] $ "
    monkeypatch.setenv("PS1", "% ")
    assert nodeexec.shell_launch("/bin/ksh", "lab", "n").env["PS1"] == "[lab.n] % "
