"""The one way in: a lab file → the explicit, validated `Lab` everything else works on.

The passes run in order, each collecting every problem it finds before stopping:

1. YAML syntax and duplicate keys (spec.source);
2. field types and unknown keys (spec.load, pydantic);
3. the high-level sections and their expansion into plain nodes (expand);
4. cross-object rules on the explicit lab (spec.checks).

Nothing touches the kernel, so `netlab validate` and `netlab render` run without root.
A problem found in a generated node points at the `cluster:` key it came from.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

from netlab.errors import LabError, Problem
from netlab.expand import expand
from netlab.spec.load import cross_check, read_lab, validate_model
from netlab.spec.model import Lab
from netlab.spec.source import Path, Source, parse_yaml


def load_lab(path: str | FsPath) -> Lab:
    """Read, validate and expand a lab file; raises LabError (exit 2) listing every problem."""
    data, source, problems = read_lab(path)
    if data is None:
        raise LabError(problems)
    return load_lab_data(data, source, problems)


def load_lab_text(text: str, file: str = "<text>") -> Lab:
    data, source, problems = parse_yaml(text, file)
    if data is None:
        raise LabError(problems)
    return load_lab_data(data, source, problems)


def load_lab_data(data: Any, source: Source | None = None, problems: list[Problem] | None = None) -> Lab:
    """Validate already-parsed data (a dict from a test, or YAML with its source map)."""
    source = source or Source("<dict>")
    lab = validate_model(data, source, list(problems or []))
    expansion = expand(lab)
    if expansion.complaints:
        raise LabError([source.problem(path, message) for path, message in expansion.complaints])
    complaints = cross_check(expansion.lab)
    if complaints:
        raise LabError([source.problem(_origin(path, expansion.origins), message)
                        for path, message in complaints])
    return expansion.lab


def _origin(path: Path, origins: dict[Path, Path]) -> Path:
    """Where a path in the expanded lab was written: `nodes.pod1.serve[0]` of a pod from
    `cluster.pods.pod1` is `cluster.pods.pod1.serve[0]`."""
    for n in range(len(path), 0, -1):
        written = origins.get(tuple(path[:n]))
        if written is not None:
            return (*written, *path[n:])
    return path
