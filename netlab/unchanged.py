"""`netlab up FILE` of a lab that is up from exactly this file: answered from the lab's
state, without loading the file (issue 19: 0.3 s of a 500-pod lab's unchanged `up` was
start-up, imports, loading and planning, all to find the same fingerprint).

A lab's state records what it was built from (`inputs`): the sha256 of the lab file's
bytes and of every file it reads (`file:` of a ruleset or dump), and an identity of the
code that turned them into the lab (netlab's own files, Python's version, the libraries
that parse and validate a lab). Loading and planning depend on nothing else, so when all
of them are the same, the lab file builds what runs: `up` says so and changes nothing,
as it would after loading it. Anything different, unknown or unreadable (a state from
an older netlab, a file given as a pipe, a lab being built or reconciled) takes the
full way.

The inputs are recorded only when they held still for the whole `up` (read before
loading, after loading and once the lab is up): a file edited meanwhile may not be what
was built, so it is never taken for it.

Imports nothing of the pipeline: this runs before it loads."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import BinaryIO

from netlab.codeid import code_id
from netlab.naming import variant_lab_name
from netlab.state import StateUnreadable, lab_lock, read_state, state_path

CODE = "code"  # the key of the code's identity in `inputs`; every other key is a file's path
_TOP_NAME = re.compile(r"""^name:[ \t]*(["']?)([A-Za-z0-9][A-Za-z0-9_-]*)\1[ \t]*(?:#.*)?$""", re.MULTILINE)


def peek_lab_name(path: str | os.PathLike[str], variant: str | None = None) -> str | None:
    """The name of the lab a file builds, from its top-level `name:` line alone, without
    loading it; None when the file is not a regular file that can be read or does not say
    so plainly (a pipe is never read: the load that follows needs its bytes). A guess:
    loading decides."""
    try:
        with _regular(path) as f:
            text = f.read(1 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    names = _TOP_NAME.findall(text)
    if len(names) != 1:
        return None
    name = names[0][1]
    return variant_lab_name(name, variant) if variant else name


def digest(path: str) -> str | None:
    """sha256 of a regular file's bytes; None if it is not one or cannot be read."""
    try:
        with _regular(path) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _regular(path: str | os.PathLike[str]) -> BinaryIO:
    """The file open for reading, if it is a regular file (OSError otherwise): opening a
    FIFO would wait for a writer, and reading a pipe would take what the load needs."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{os.fspath(path)} is not a regular file")
    return os.fdopen(fd, "rb")


def inputs(source: str, files: list[str]) -> dict[str, str]:
    """What a lab built now from lab file `source` and the files it read is made from
    (paths absolute); {} if one of them is not a regular file that can be read."""
    found = {CODE: code_id()}
    for path in [source, *files]:
        sha = digest(path)
        if sha is None:
            return {}
        found[path] = sha
    return found


def same_now(recorded: dict[str, str]) -> bool:
    """Whether every input recorded is still the same: the code, and each file's bytes."""
    return (
        CODE in recorded
        and len(recorded) > 1
        and all(digest(path) == sha for path, sha in recorded.items() if path != CODE)
        and code_id() == recorded[CODE]
    )


def still(recorded: dict[str, str]) -> dict[str, str]:
    """`recorded` if every input is still the same now, else {}: what to record."""
    return recorded if recorded and same_now(recorded) else {}


def up_from(recorded: dict[str, str], source: str, variant: str | None, built_as: str | None) -> bool:
    """Whether a lab whose state recorded `recorded`, built as variant `built_as`, is up
    from exactly what lab file `source` (absolute) builds as `variant` now."""
    return variant == built_as and source in recorded and same_now(recorded)


def up_from_file(file: str, variant: str | None) -> str | None:
    """The name of the lab lab file `file` builds (as `variant`) if that lab is up from
    exactly what the file is now; None if it is not, or that cannot be told without
    loading the file."""
    name = peek_lab_name(file, variant)
    source = os.path.realpath(file)
    sha = digest(source)
    if name is None or sha is None:
        return None
    # A state whose bytes do not hold the file's digest was not built from it: told without
    # parsing its JSON (1.4 MB for 500 pods, 0.008 s), which the full way then reads again.
    try:
        with open(state_path(name), "rb") as f:
            if sha.encode() not in f.read():
                return None
    except OSError:
        return None
    with lab_lock(name):  # not while an `up` or `down` of it runs
        try:
            state = read_state(name)
        except StateUnreadable:
            return None
        if state is None or (state.status, state.lab, state.source) != ("up", name, source):
            return None
        return name if up_from(state.inputs, source, variant, state.variant) else None
