"""`check --watch`: when to run the checks again — whenever the lab file changes (its
checks are re-read each run, no rebuild), and on an interval if asked. Polled with
stat(): no inotify dependency, and an editor's save (a new file renamed over the old
one) is a change like any other."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from netlab.errors import UsageError
from netlab.naming import is_lab_file
from netlab.state import read_state

POLL = 0.25  # seconds between looks at the file


def lab_file_of(target: str, variant: str | None) -> str:
    """The lab file behind TARGET: itself, or the one the lab that is up was built from."""
    if is_lab_file(target):
        return target
    name = f"{target}-{variant}" if variant else target
    st = read_state(name)
    if st is None:
        raise UsageError(f"lab {name} is not up; `netlab up FILE` first, then `netlab check {name} --watch`")
    return st.source


class FileWatch:
    """Says whether a file changed since last asked (content, or replaced by another file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = self._look()

    def _look(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # gone for a moment (an editor's save): a change when it is back
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def changed(self) -> bool:
        now = self._look()
        if now == self._seen or now is None:
            return False
        self._seen = now
        return True


def changes(
    watch: FileWatch,
    interval: float | None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """Yields at once, then after every change of the file (once it has stopped changing
    for a moment: a save in progress is not read half-written) and, with an interval,
    whenever that much time has passed since the last run. Never ends by itself."""
    while True:
        yield
        due = clock() + interval if interval is not None else None
        while True:
            sleep(POLL)
            if watch.changed():
                while True:  # settled: unchanged for one more look
                    sleep(POLL)
                    if not watch.changed():
                        break
                break
            if due is not None and clock() >= due:
                break
