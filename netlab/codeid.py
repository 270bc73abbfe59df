"""Which code turns a lab file into a lab: every file of netlab's package, Python's
version and the libraries that parse and validate a lab. A lab's state records it
(netlab.unchanged), and `netlab serve` runs only the commands of clients that run the
same code as it does (netlab.client).

Stdlib only: a served command's client computes it before it imports anything else."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from typing import Any

import netlab

_LIBRARIES = ("pydantic", "pydantic_core", "yaml")  # what validates and parses a lab besides netlab


@functools.cache  # what this process was started from: the files as they were when it first looked
def code_id() -> str:
    """Which code loads and plans a lab: every file of netlab's package (path, size,
    mtime; an editable checkout changes without a new version), Python's version, and
    the files pydantic, pydantic_core and PyYAML are imported from. ~1 ms."""
    h = hashlib.sha256(f"{sys.version}\0{netlab.__version__}\n".encode())
    root = os.path.dirname(os.path.abspath(netlab.__file__))
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            _stamp(h, os.path.join(top, name))
    for module in _LIBRARIES:
        spec = importlib.util.find_spec(module)
        _stamp(h, spec.origin if spec is not None and spec.origin else module)
    return h.hexdigest()


def _stamp(h: Any, path: str) -> None:
    try:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        h.update(f"{path}\0missing\n".encode())
