"""Every error netlab reports, and the exit code it maps to.

    NetlabError                 exit 1  (base; "something failed")
    ├── LabError                exit 2  bad lab file: a list of Problems, each with file:line and key path
    ├── UsageError              exit 2  bad command-line use (unknown lab, conflicting options)
    ├── ApplyError              exit 1  the kernel refused an operation; names the lab object and errno text
    ├── Interrupted             exit 130 (SIGINT) / 143 (SIGTERM); says what was undone
    ├── AlreadyUp               exit 1  the lab is up from a different file or version
    ├── NotRoot                 exit 3  the command needs root
    └── MissingFeature          exit 3  the kernel lacks what the lab requires

The CLI catches NetlabError, prints `str(err)` and exits with `err.exit_code`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from netlab.wording import plural

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


class NetlabError(Exception):
    exit_code = EXIT_FAILED
    # Set by the CLI as the error leaves a command: which one, with which options (its
    # --json and --junit report the error too).
    command: str | None = None
    options: dict[str, Any] | None = None


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in a lab file: where it is, which key, what is wrong and what would be right."""

    file: str
    line: int
    path: str  # key path, e.g. "nodes.node1.routes[2].via"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


MAX_SHOWN_PROBLEMS = 200  # a hostile file can have 100 000 mistakes; a user reads the first ones


class LabError(NetlabError):
    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: list[Problem], what: str = "the lab") -> None:
        self.problems = sorted(set(problems))
        # No "nothing was created" here: `validate`, which never creates anything, prints it
        # too; that exit 2 leaves nothing behind is in every command's --help.
        n = len(self.problems)
        head = f"{plural(n, 'problem')} in {what}:"
        shown = [f"  {p}" for p in self.problems[:MAX_SHOWN_PROBLEMS]]
        if n > MAX_SHOWN_PROBLEMS:
            shown.append(f"  … and {n - MAX_SHOWN_PROBLEMS} more (only the first {MAX_SHOWN_PROBLEMS} are shown)")
        super().__init__("\n".join([head, *shown]))


class UsageError(NetlabError):
    exit_code = EXIT_BAD_INPUT


class ApplyError(NetlabError):
    """The kernel refused an operation. `what` names the lab object, `reason` is the kernel's message."""

    def __init__(self, what: str, reason: str, *, rolled_back: bool = False) -> None:
        self.what = what
        self.reason = reason
        self.rolled_back = rolled_back
        tail = "; everything created so far was removed" if rolled_back else ""
        super().__init__(f"failed: {what}: {reason}{tail}")


class Interrupted(NetlabError):
    """A command ended by SIGINT or SIGTERM, after undoing what it had done; the message
    is the one line the user sees, e.g. "up of lab x interrupted by SIGINT while creating
    links; everything created so far was removed"."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class AlreadyUp(NetlabError):
    pass


class NotRoot(NetlabError):
    exit_code = EXIT_ENVIRONMENT


class MissingFeature(NetlabError):
    exit_code = EXIT_ENVIRONMENT


class TooFewDescriptors(NetlabError):
    """The process may not open as many descriptors as building the lab takes."""

    exit_code = EXIT_ENVIRONMENT


def require_root(what: str, *, reads_only: bool = False) -> None:
    if os.geteuid() != 0:
        why = (
            "needs root to read the lab's network namespaces"
            if reads_only
            else "changes network namespaces and needs root"
        )
        raise NotRoot(f"`netlab {what}` {why}; run it with sudo")
