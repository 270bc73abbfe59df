"""Ctrl-C and SIGTERM: one outcome for every command.

The `netlab` command installs `handle_signals()` before anything heavy is imported. From
then on SIGINT and SIGTERM are turned into `Signalled`, a BaseException (so no `except
Exception` swallows it), raised in the main thread wherever it is. Each verb that changes
the kernel catches it, undoes what it did, and raises `errors.Interrupted`, whose message
is the one line the user sees and whose exit code is 128 + the signal (130, 143).

Two moments are special:
- while Python is still importing netlab (before `main` runs), nothing exists yet: the
  handler prints one line and exits at once;
- inside `deferred()` or after `hold()` (a rollback, a teardown, from the moment `up`
  records the lab as up, the end of every command) a signal is only recorded;
  `pending()` tells the caller, which honours it when the work is finished. A signal is
  never dropped: `main` checks `pending()` before exiting — and a signal after `up`
  reported success leaves that success standing (exit 0, the lab up).

Signals are recorded by a flag, not blocked with pthread_sigmask: worker threads created
earlier keep the signal unblocked, and CPython runs the handler in the main thread
whichever thread the kernel picked.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Signalled(BaseException):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_started = False  # main() is running: raise instead of exiting on the spot
_depth = 0  # nesting of deferred()
_pending: int | None = None  # a signal recorded inside deferred(), not yet honoured
_success: str | None = None  # what to say if a signal lands after the command reported success


def _handler(signum: int, _frame: FrameType | None) -> None:
    global _pending
    if _depth:
        _pending = _pending or signum
        return
    if not _started:
        # Still importing: nothing was created, and raising here would print a traceback.
        os.write(
            2, f"netlab: interrupted by {signal.Signals(signum).name} while starting; nothing was changed\n".encode()
        )
        os._exit(128 + signum)
    raise Signalled(signum)


def handle_signals() -> None:
    """Install the handler (from the main thread, as early as possible)."""
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def started() -> None:
    """From here on a signal raises Signalled instead of ending the process."""
    global _started
    _started = True


@contextmanager
def loading() -> Iterator[None]:
    """A command importing what it needs, before it has changed anything: a signal here
    ends the process at once with the start-up line. (Raised inside an import, it would
    surface wrapped in whatever was being built — pydantic turns it into a SchemaError.)"""
    global _started
    was = _started
    _started = False
    try:
        yield
    finally:
        _started = was


def fork() -> int:
    """os.fork() with SIGINT/SIGTERM held in the kernel until it returns, in parent and
    child: a handler raising inside fork's at-fork hooks (logging releases its lock there)
    has its exception printed as 'Exception ignored' and dropped, so the signal was lost."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        return os.fork()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _ours() -> bool:
    """In the main thread, with netlab's handler installed (the CLI, or inside deferred())."""
    return threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _handler


def hold() -> None:
    """From here a signal is only recorded, until `release()`. Only where netlab's handler
    is installed: a program using netlab as a library keeps its own signal handling."""
    global _depth
    if _ours():
        _depth += 1


def release() -> None:
    global _depth
    if _ours():
        _depth = max(0, _depth - 1)


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end whatever arrives; a signal is recorded for `pending()`.
    (Handlers run in the main thread: in other threads there is nothing to defer.)

    Where netlab's handler is not installed (netlab used as a library, e.g. by the pytest
    plugin), it is for the block, and a signal that arrived is re-sent to the program's
    own handler afterwards."""
    main = threading.current_thread() is threading.main_thread()
    borrowed = {sig: signal.getsignal(sig) for sig in SIGNALS} if main else {}
    borrowed = {sig: h for sig, h in borrowed.items() if h is not _handler and h is not None}
    for sig in borrowed:
        signal.signal(sig, _handler)
    hold()
    try:
        yield
    finally:
        release()
        if borrowed:
            for sig, old in borrowed.items():
                signal.signal(sig, old)
            if _depth == 0 and (signum := take_pending()) is not None:
                signal.raise_signal(signum)


def success_reported(note: str) -> None:
    """The command has told the user it succeeded: a signal from now on is answered with
    `note` and exit 0 (what was reported stays true)."""
    global _success
    hold()
    _success = note


def finish(code: int) -> int:
    """The exit code, once the command is over: a signal recorded and not yet honoured
    turns it into 128 + signal (or, after a reported success, into `note` and 0).
    Signals are ignored from here on, so none can end the process during Python's own
    shutdown (which restores the default action, death by the signal)."""
    hold()
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signum = take_pending()
    if signum is None:
        return code
    if _success is not None:
        sys.stderr.write(f"netlab: {name_of(signum)} arrived after {_success}\n")
        return code
    sys.stderr.write(f"netlab: interrupted by {name_of(signum)} as the command finished\n")
    return 128 + signum


def pending() -> int | None:
    """The signal recorded inside `deferred()` and not yet honoured, if any."""
    return _pending


def take_pending() -> int | None:
    """The pending signal, now considered honoured by the caller."""
    global _pending
    sig, _pending = _pending, None
    return sig


def raise_pending() -> None:
    """Honour a signal recorded inside `deferred()` by raising it now."""
    sig = take_pending()
    if sig is not None:
        raise Signalled(sig)


def honour_pending() -> None:
    """Raise a signal recorded inside `deferred()` now, unless an outer `deferred()` is
    still holding signals (its owner honours it when its work is done)."""
    if _depth == 0:
        raise_pending()


def signum_of(err: BaseException) -> int | None:
    """The signal behind an exception: Signalled, or KeyboardInterrupt (SIGINT with Python's
    own handler, as in tests that call netlab in-process) — also when something wrapped it:
    a handler raising while Python builds a class (a lazy import) surfaces as the cause of
    another error (3.11's RuntimeError "Error calling __set_name__"). Only causes are
    followed, not contexts: an error raised while undoing after a signal is that error."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, Signalled):
            return cur.signum
        if isinstance(cur, KeyboardInterrupt):
            return int(signal.SIGINT)
        cur = cur.__cause__
    return None


def name_of(signum: int) -> str:
    return signal.Signals(signum).name
