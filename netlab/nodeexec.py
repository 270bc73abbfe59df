"""`netlab exec`: a command or a shell inside a lab node's namespace, or one command on
several nodes at once.

Everything runs through `ip netns exec NS …`, so a node looks as it does to users who
type that themselves (its own /sys, the /etc/netns/NS files). The command is looked up
first, as a shell would: `ip` reports a command it cannot start with its own exit status
(255), while scripts test for a shell's 127 (not found) and 126 (found, cannot run).

A shell's prompt names LAB.NODE: the user's own rc files are read as usual (never
changed), and the prompt they set gets the prefix afterwards — through an rc file that
sources them (bash: --rcfile on a memfd; zsh: a ZDOTDIR that removes itself once read),
fish's --init-command, or $PS1 for other shells.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from netlab.errors import NetlabError, UsageError
from netlab.naming import NETNS_DIR, netns_name, split_netns_name
from netlab.wording import plural

EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
WORKERS = 32  # commands running at once on a multi-node exec


class CommandError(NetlabError):
    """The command cannot be started: exit 127 (not found) or 126 (not executable)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def lab_nodes(lab: str, nodes: Mapping[str, str] | None) -> dict[str, str]:
    """node → namespace of an up lab: from its state (`nodes`), else from /run/netns."""
    if nodes is None:
        try:
            names = sorted(os.listdir(NETNS_DIR))
        except FileNotFoundError:
            names = []
        found = {split[1]: name for name in names if (split := split_netns_name(name)) and split[0] == lab}
    else:
        found = dict(nodes)
    if not found:
        raise UsageError(f"lab {lab} is not up; run `netlab up` first")
    return found


def select_nodes(lab: str, nodes: Mapping[str, str], pattern: str | None) -> dict[str, str]:
    """The nodes a NODE argument names: one node, or a shell-style GLOB (None: all)."""
    chosen = match_nodes(lab, nodes, pattern)
    for ns in chosen.values():
        if not os.path.exists(os.path.join(NETNS_DIR, ns)):
            raise UsageError(f"lab {lab} is not up (no namespace {ns}); run `netlab up` first")
    return chosen


def match_nodes(lab: str, nodes: Mapping[str, str], pattern: str | None) -> dict[str, str]:
    """The nodes (of `nodes`, node → namespace) a NODE argument names; UsageError if none."""
    if pattern is None:
        chosen = dict(nodes)
    elif is_glob(pattern):
        chosen = {n: ns for n, ns in nodes.items() if fnmatchcase(n, pattern)}
    else:
        chosen = {pattern: nodes[pattern]} if pattern in nodes else {}
    if not chosen:
        what = f"no node matching {pattern!r}" if pattern and is_glob(pattern) else f"no node {pattern!r}"
        raise UsageError(f"lab {lab} has {what} (nodes: {', '.join(nodes)})")
    return chosen


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def check_runnable(argv0: str, path: str | None = None) -> None:
    """Raise CommandError (127/126, in a shell's words) unless argv0 can be executed."""
    if "/" not in argv0:
        if shutil.which(argv0, path=path):
            return
        dirs = (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep)
        for d in dirs:
            candidate = os.path.join(d or ".", argv0)
            if os.path.isfile(candidate):
                raise CommandError(f"{argv0}: cannot run {candidate}: permission denied", EXIT_CANNOT_RUN)
        raise CommandError(f"{argv0}: command not found", EXIT_NOT_FOUND)
    if not os.path.exists(argv0):
        raise CommandError(f"{argv0}: no such file or directory", EXIT_NOT_FOUND)
    if os.path.isdir(argv0):
        raise CommandError(f"{argv0}: is a directory", EXIT_CANNOT_RUN)
    if not os.access(argv0, os.X_OK):
        raise CommandError(f"{argv0}: permission denied", EXIT_CANNOT_RUN)


def ip_netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


# ---------------------------------------------------------------- a shell


@dataclass
class ShellLaunch:
    """How to start a shell whose prompt names the node: its argv, what to add to its
    environment, and a descriptor it must inherit (bash's rc file)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    pass_fd: int | None = None


def shell_launch(shell: str, lab: str, node: str) -> ShellLaunch:
    label = netns_name(lab, node)
    prefix = f"[{label}] "
    env = {"NETLAB_LAB": lab, "NETLAB_NODE": node}
    kind = os.path.basename(shell)
    if kind == "bash":
        fd = os.memfd_create("netlab-bashrc", 0)
        os.set_inheritable(fd, True)
        # Read whole before it runs, so it may close its own descriptor at the end.
        rc = f'[ -f ~/.bashrc ] && . ~/.bashrc\nPS1={shlex.quote(prefix)}"${{PS1-\\s-\\v\\$ }}"\nexec {fd}<&-\n'
        os.write(fd, rc.encode())
        return ShellLaunch([shell, "--rcfile", f"/proc/self/fd/{fd}"], env, fd)
    if kind == "zsh":
        return ShellLaunch([shell], {**env, **_zsh_dotdir(prefix)})
    if kind == "fish":
        init = (
            "functions -c fish_prompt __netlab_prompt; "
            f"function fish_prompt; echo -n {shlex.quote(prefix)}; __netlab_prompt; end"
        )
        return ShellLaunch([shell, "--init-command", init], env)
    return ShellLaunch([shell], {**env, "PS1": prefix + os.environ.get("PS1", "\\$ " if kind == "sh" else "$ ")})


def _zsh_dotdir(prefix: str) -> dict[str, str]:
    """A ZDOTDIR whose startup files read the user's own, set the prompt, and remove
    the directory (so nothing is left once the shell has started)."""
    d = tempfile.mkdtemp(prefix="netlab-zsh-")
    home = shlex.quote(os.environ.get("ZDOTDIR", os.path.expanduser("~")))
    for name in (".zshenv", ".zprofile", ".zlogin"):
        with open(os.path.join(d, name), "w") as f:
            f.write(f"[ -f {home}/{name} ] && . {home}/{name}\n")
    with open(os.path.join(d, ".zshrc"), "w") as f:
        f.write(
            f"[ -f {home}/.zshrc ] && . {home}/.zshrc\n"
            f'PROMPT={shlex.quote(prefix)}"$PROMPT"\nZDOTDIR={home}\nrm -rf -- {shlex.quote(d)}\n'
        )
    return {"ZDOTDIR": d}


def user_shell() -> str:
    shell = os.environ.get("SHELL") or ""
    if shell and os.access(shell, os.X_OK):
        return shell
    return shutil.which("bash") or "/bin/sh"


# ---------------------------------------------------------------- one command on several nodes


@dataclass
class NodeRun:
    node: str
    exit: int  # the command's exit status; 128 + N when signal N ended it
    stdout: str = ""
    stderr: str = ""


OnLine = Callable[[str, str, str], None]  # (node, "stdout" | "stderr", line without its newline)


@dataclass
class _Running:
    node: str
    proc: subprocess.Popen[bytes]
    partial: dict[str, bytes] = field(default_factory=lambda: {"stdout": b"", "stderr": b""})  # a line's start
    whole: dict[str, list[bytes]] = field(default_factory=lambda: {"stdout": [], "stderr": []})  # lines, with \n
    open_streams: int = 2


def run_on_nodes(
    nodes: Mapping[str, str], argv: Sequence[str], on_line: OnLine | None = None, workers: int = WORKERS
) -> list[NodeRun]:
    """Run argv in each node's namespace (up to `workers` at once, stdin empty); each
    line of output goes to on_line as it comes. Results in the order of `nodes`."""
    todo = list(nodes.items())
    results: dict[str, NodeRun] = {}
    sel = selectors.DefaultSelector()
    running: list[_Running] = []
    try:
        while todo or running:
            while todo and len(running) < workers:
                node, ns = todo.pop(0)
                running.append(_start(sel, node, ns, argv))
            for key, _ in sel.select():
                run, stream = key.data
                chunk = os.read(key.fd, 65536)
                if chunk:
                    _lines(run, stream, chunk, on_line)
                    continue
                sel.unregister(key.fd)
                _lines(run, stream, b"\n" if run.partial[stream] else b"", on_line)  # a last line without \n
                run.open_streams -= 1
                if run.open_streams == 0:
                    running.remove(run)
                    results[run.node] = _finished(run)
    finally:
        for run in running:  # interrupted: nothing is left running in the lab
            with contextlib.suppress(ProcessLookupError):
                run.proc.kill()
            run.proc.wait()
        sel.close()
    return [results[node] for node in nodes]


def _start(sel: selectors.BaseSelector, node: str, ns: str, argv: Sequence[str]) -> _Running:
    proc = subprocess.Popen(
        ip_netns_exec(ns, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    run = _Running(node, proc)
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, (run, "stdout"))
    sel.register(proc.stderr, selectors.EVENT_READ, (run, "stderr"))
    return run


def _lines(run: _Running, stream: str, chunk: bytes, on_line: OnLine | None) -> None:
    *whole, run.partial[stream] = (run.partial[stream] + chunk).split(b"\n")
    for line in whole:
        run.whole[stream].append(line + b"\n")
        if on_line is not None:
            on_line(run.node, stream, line.decode(errors="replace"))


def _finished(run: _Running) -> NodeRun:
    code = run.proc.wait()
    return NodeRun(
        run.node,
        128 - code if code < 0 else code,
        b"".join(run.whole["stdout"]).decode(errors="replace"),
        b"".join(run.whole["stderr"]).decode(errors="replace"),
    )


def summary(lab: str, results: Sequence[NodeRun]) -> str:
    """One line: how many nodes ran it, how many exited 0 (unless none did), and which did not."""
    ok = sum(r.exit == 0 for r in results)
    by_code: dict[int, list[str]] = {}
    for r in results:
        if r.exit != 0:
            by_code.setdefault(r.exit, []).append(r.node)
    parts = [f"{ok} exited 0"] * bool(ok) + [
        f"{len(ns)} exited {code} ({', '.join(ns)})" for code, ns in sorted(by_code.items())
    ]
    return f"exec on {plural(len(results), 'node')} of lab {lab}: {', '.join(parts)}"


def exit_status(results: Sequence[NodeRun]) -> int:
    """0 when every node's command exited 0, else the highest exit status among them."""
    return max((r.exit for r in results), default=0)
