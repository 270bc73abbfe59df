"""`netlab logs`: what a lab's processes said — the output of its `exec:` commands (kept
when `up` ran them) and its responders' log (a line per connection they answered, and how
they ended) — both next to the lab's state, removed by `down`.

Exec log lines are `HH:MM:SS NODE …` (`|` stdout, `!` stderr); responder lines
`HH:MM:SS responders[PID]: PROTO NODE:PORT <- PEER`, so a node's lines are told apart by
their text. The exec commands run before the responders start: the exec log, then the
responders', is the order things happened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from netlab.state import exec_log_path, responder_log_path

SOURCES = ("exec", "responders")
POLL = 0.25  # seconds between looks for new lines with --follow


def log_paths(lab: str, source: str | None) -> dict[str, str]:
    """source → its log file (both when `source` is None)."""
    paths = {"exec": exec_log_path(lab), "responders": responder_log_path(lab)}
    return {k: v for k, v in paths.items() if source in (None, k)}


def about(line: str, source: str, node: str) -> bool:
    """The line is about `node`: an exec line of the node, or a connection it served."""
    if source == "exec":
        return line.split(" ", 2)[1:2] == [node]
    return f" {node}:" in line


@dataclass
class Tail:
    """New whole lines of some files, from where the last read stopped."""

    paths: dict[str, str]
    offsets: dict[str, int] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)

    def read(self) -> list[tuple[str, str]]:
        """(source, line) for every whole line written since the last read."""
        lines = []
        for source, path in self.paths.items():
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    f.seek(self.offsets.get(source, 0))
                    chunk = f.read()
                    self.offsets[source] = f.tell()
            except FileNotFoundError:
                continue
            *whole, self.partial[source] = (self.partial.get(source, "") + chunk).split("\n")
            lines += [(source, line) for line in whole]
        return lines

    def gone(self) -> bool:
        return not any(os.path.exists(p) for p in self.paths.values())


def follow(tail: Tail, sleep: Callable[[float], None] = time.sleep) -> Iterator[list[tuple[str, str]]]:
    """The lines as they come, until the files are gone (the lab was taken down)."""
    while True:
        yield tail.read()
        if tail.gone():
            return
        sleep(POLL)
