"""Output that fits where it goes: the check table through a pipe is one whole line per
check at any width, without colour; on a terminal (a pseudo-terminal here) it is the
table, fitted to the terminal's width or $COLUMNS, coloured unless $NO_COLOR."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = [
    f"pod-{i} to the service at 10.96.0.10:80 is not SNATed on its way out of node1 through eth0" for i in range(4)
]
# The check table as `netlab check` prints it, from verdicts made up here (no lab needed).
PRINT_TABLE = f"""
from netlab import cli, report
from netlab.probes.checks import Verdict
names = {NAMES!r}
report.print_text(cli.out, "lab1", [Verdict(name=n, kind="probe", passed=i % 2 == 0, summary="SYN answered by "
                  "10.2.0.11:8080 from 10.1.0.2, conntrack entry seen", reasons=["expected a reply"])
                  for i, n in enumerate(names)], 1.0)
"""
ANSI = "\x1b["


def _pty(columns: int) -> tuple[int, int]:
    main, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return main, tty


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "TERM")}
    env.update({"PYTHONPATH": str(REPO), "TERM": "xterm-256color"}, **extra)
    return env


def _drain(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], 10)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side closed (EIO on Linux)
            break
        if not chunk:
            break
        data += chunk
    return data.decode()


@pytest.mark.parametrize("columns", [None, "20", "80", "400"])
def test_piped_check_lines_are_whole_at_any_width(columns: str | None) -> None:
    """stdin and stderr a narrow terminal (rich alone would wrap at its 40 columns), stdout
    a pipe: every check's line holds its whole name and observation, with no colour."""
    main, tty = _pty(40)
    try:
        env = _env(**({"COLUMNS": columns} if columns else {}))
        proc = subprocess.run(
            [sys.executable, "-c", PRINT_TABLE],
            stdin=tty,
            stderr=tty,
            stdout=subprocess.PIPE,
            env=env,
            timeout=60,
            text=True,
            check=True,
        )
    finally:
        os.close(tty)
        os.close(main)
    lines = proc.stdout.splitlines()
    for i, name in enumerate(NAMES):
        mark = "✓" if i % 2 == 0 else "✗"
        row = [line for line in lines if name in line and line.startswith(mark + " ")]
        assert row and "SYN answered by 10.2.0.11:8080 from 10.1.0.2, conntrack entry seen" in row[0], proc.stdout
    assert f"✗ {NAMES[1]}" in lines
    assert ANSI not in proc.stdout


def _on_terminal(columns: int, script: str = PRINT_TABLE, **env: str) -> str:
    """What `script` prints on a pseudo-terminal `columns` wide (its stdin, stdout and stderr)."""
    main, tty = _pty(columns)
    try:
        proc = subprocess.Popen([sys.executable, "-c", script], stdin=tty, stdout=tty, stderr=tty, env=_env(**env))
        os.close(tty)
        text = _drain(main)
        assert proc.wait(timeout=60) == 0, text
    finally:
        os.close(main)
    return text.replace("\r\n", "\n")


def test_terminal_gets_the_coloured_table_at_its_width() -> None:
    text = _on_terminal(100)
    header = next(line for line in text.splitlines() if "check" in line)
    assert "observed" in header  # the table's columns, side by side
    assert "\x1b[32m✓" in text and "\x1b[31m✗" in text  # green and red marks
    table = _table(text)
    assert max(len(line) for line in table) <= 100
    assert not any(NAMES[0] in line for line in table)  # wrapped within its column


def test_terminal_respects_columns_and_no_color() -> None:
    text = _on_terminal(200, COLUMNS="60", NO_COLOR="1")
    assert "\x1b[32m" not in text and "\x1b[31m" not in text
    table = _table(text)
    assert max(len(line) for line in table) <= 60
    assert "observed" in table[0]


def _table(text: str) -> list[str]:
    """The table's lines, colour codes removed (the failed checks' details after it are
    soft-wrapped: the terminal folds them)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return plain.split("\n\n")[0].splitlines()


ROWS = [
    ["host", "docker0", "bridge", "172.17.0.1/16 fd00::1/64"],
    ["c1", "eth0", "", ""],
    ["pod-10", "vethwëird", "veth", "—"],  # wider than ASCII, and a dash status prints
    ["x\x07", "y\r", "z", "w"],  # a bell and a carriage return are dropped, as rich drops them
]


@pytest.mark.parametrize("rows", [ROWS, []])
@pytest.mark.parametrize("title", [None, "lab x — up — /tmp/x.yaml"])
@pytest.mark.parametrize("ruled", [True, False])
def test_a_table_is_drawn_as_rich_draws_it(rows: list[list[str]], title: str | None, ruled: bool) -> None:
    """rows.table (status's tables, fast) is rich's Table, character for character."""
    import io

    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from netlab.rows import table

    columns = ["node", "interface", "kind", "addresses"]
    drawn = io.StringIO()
    box = {} if ruled else {"box": None, "pad_edge": False, "header_style": "bold"}
    rich_table = Table(title=title, title_justify="left", show_edge=False, **box)  # type: ignore[arg-type]
    for column in columns:
        rich_table.add_column(column)
    for row in rows:
        rich_table.add_row(*map(Text, row))
    Console(file=drawn, width=1000, no_color=True, highlight=False, soft_wrap=True).print(rich_table)
    text, width = table(columns, rows, ruled=ruled, title=title, styled=False)
    assert text == drawn.getvalue()
    assert width == max(cell_len(line) for line in text.splitlines()[1 if title else 0 :])
    styled, _ = table(columns, rows, ruled=ruled, title=title, styled=True)
    assert "\x1b[1m" in styled and re.sub(r"\x1b\[[0-9;]*m", "", styled) == text


# `netlab status`'s table, from a lab status made up here (no lab needed): 30 pods, one
# with a long list of addresses.
PRINT_STATUS = """
from netlab import cli
from netlab.kernel.driver import AddressView, LinkView, NamespaceView
from netlab.status import LabStatus

def link(name, *addresses):
    return LinkView(name, 2, "veth", True, "up", 1500, "", None, None, tuple(AddressView(a, 4) for a in addresses))

nodes = {f"pod{i}": NamespaceView(f"lab1.pod{i}", (link("eth0", f"10.0.0.{i}/24"),)) for i in range(30)}
nodes["router"] = NamespaceView("lab1.router", (link("eth1", *[f"192.168.{i}.1/24" for i in range(12)]),))
cli._print_status([LabStatus("lab1", "up", "/tmp/lab1.yaml", None, nodes)])
"""
ROUTER = " ".join(f"192.168.{i}.1/24" for i in range(12))


def test_status_on_a_wide_terminal_is_one_line_a_row() -> None:
    text = _on_terminal(400, PRINT_STATUS)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "\x1b[1m" in text and "\x1b[3mlab lab1 — up — /tmp/lab1.yaml" in text  # bold header, italic title
    assert any(line.startswith(" router │ eth1 ") and ROUTER in line for line in plain.splitlines()), plain


@pytest.mark.parametrize("env", [{"COLUMNS": "60"}, {"COLUMNS": "60", "NO_COLOR": "1"}])
def test_status_too_wide_for_the_terminal_folds_its_cells(env: dict[str, str]) -> None:
    """At $COLUMNS (narrower than the terminal) the addresses fold inside their column:
    every line fits, none is cut, and they read whole down the column."""
    text = _on_terminal(200, PRINT_STATUS, **env)
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", text)  # status has no colours, only bold and italics
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    table = [line for line in plain.splitlines() if "│" in line or "┃" in line]
    assert max(len(line.rstrip()) for line in table) <= 60 and "…" not in plain, plain
    column = "".join(line.split("│")[-1].strip() for line in table if "│" in line)
    assert ROUTER.replace(" ", "") in column.replace(" ", ""), plain


@pytest.mark.parametrize("columns", [None, "20"])
def test_status_into_a_pipe_is_whole_lines_without_colour(columns: str | None) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PRINT_STATUS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_env(**({"COLUMNS": columns} if columns else {})),
    )
    assert ANSI not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "lab lab1 — up — /tmp/lab1.yaml" and len(lines) == 3 + 31
    assert any(line.startswith(" router │ eth1 ") and ROUTER in line for line in lines), done.stdout


_EXITING = """\
import atexit, sys
import netlab.cli
atexit.register(lambda: print("the exit handler ran"))
print("buffered", end="")
netlab.cli._exit(7)
"""


def test_a_command_exits_without_finalization_but_with_its_handlers_and_output() -> None:
    """No other thread: exit handlers run, buffered output is flushed, the code is kept."""
    p = subprocess.run([sys.executable, "-c", _EXITING], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (7, "bufferedthe exit handler ran\n"), p.stderr


def test_under_a_profiler_a_command_exits_as_python_does() -> None:
    """cProfile (or coverage) writes its results after SystemExit: it must get one."""
    from netlab import cli

    sys.setprofile(lambda *_: None)
    try:
        with pytest.raises(SystemExit) as caught:
            cli._exit(5)
    finally:
        sys.setprofile(None)
    assert caught.value.code == 5
