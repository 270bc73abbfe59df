"""Load a lab file: YAML → validated, immutable `Lab`, or a LabError listing *every* problem.

Three passes, each collecting all it finds before stopping: YAML syntax and duplicate
keys; field types and unknown keys (pydantic); cross-object rules (checks.py).
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path as FsPath
from typing import Any, Union

import pydantic
from pydantic import BaseModel

from netlab.errors import LabError, Problem
from netlab.spec.checks import check_lab
from netlab.spec.model import LINK_KINDS, LINK_TAGS, Lab
from netlab.spec.source import Path, Source, parse_yaml
from netlab.spec.topology import Topology, resolve


def load_lab(path: str | FsPath) -> Lab:
    """Read and validate a lab file; raises LabError (exit 2) listing every problem."""
    file = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except OSError as err:
        raise LabError([Problem(file, 0, "", f"cannot read the lab file: {err.strerror}")]) from None
    except UnicodeDecodeError as err:
        raise LabError([Problem(file, 0, "", f"the lab file is not UTF-8 text: {err.reason}")]) from None
    return load_lab_text(text, file)


def load_lab_text(text: str, file: str = "<text>") -> Lab:
    data, source, problems = parse_yaml(text, file)
    if data is None:
        raise LabError(problems)
    return load_lab_data(data, source, problems)


def load_lab_data(data: Any, source: Source | None = None, problems: list[Problem] | None = None) -> Lab:
    """Validate already-parsed data (a dict from a test, or YAML with its source map)."""
    source = source or Source("<dict>")
    problems = list(problems or [])
    if not isinstance(data, dict):
        raise LabError(
            [*problems, source.problem((), "a lab file is a mapping with `name:` and `nodes:` at the top")]
        )
    try:
        lab = Lab.model_validate(data)
    except pydantic.ValidationError as err:
        problems += [_problem_from_pydantic(e, source) for e in err.errors()]
        raise LabError(problems) from None
    topo, complaints = resolve(lab)
    complaints += check_lab(lab, topo)
    problems += [source.problem(path, message) for path, message in complaints]
    if problems:
        raise LabError(problems)
    return lab


def topology(lab: Lab) -> Topology:
    """The resolved topology of a lab that loaded cleanly."""
    topo, _ = resolve(lab)
    return topo


# ---------------------------------------------------------------- pydantic → Problem


def _clean_loc(loc: tuple[Any, ...]) -> Path:
    """Drop pydantic's bookkeeping from a location: union tags and '[key]' markers."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        if i >= 2 and loc[i - 2] == "links" and part in LINK_TAGS and isinstance(loc[i - 1], str):
            continue  # the link-kind tag pydantic inserts for the tagged union
        if isinstance(part, str) and part.startswith(("function-", "list[", "dict[")):
            continue
        out.append(part)
    return tuple(out)


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / unions."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _link_tag_of(tp: Any) -> str | None:
    """The tag a link model answers to ('end' for PeerEnd), or None for other types."""
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return None
    kind = tp.model_fields.get("kind")
    if kind is None:
        return "end"
    args = typing.get_args(kind.annotation)
    return str(args[0]) if args else None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Which model class sits at a raw pydantic location (to list its allowed keys)."""
    current: list[Any] = [Lab]
    for part in loc:
        if part == "[key]":
            return None
        tags = {_link_tag_of(t) for t in current}
        if isinstance(part, str) and part in LINK_TAGS and part in tags and len(current) > 1:
            current = [t for t in current if _link_tag_of(t) == part]  # the tagged-union step
            continue
        nxt: list[Any] = []
        for tp in current:
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                for name, info in tp.model_fields.items():
                    if part in (name, info.alias):
                        nxt += _unwrap(info.annotation)
            elif typing.get_origin(tp) in (list, dict):
                nxt += _unwrap(typing.get_args(tp)[-1])
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if len(models) == 1 else None


def _problem_from_pydantic(err: Any, source: Source) -> Problem:
    raw_loc = tuple(err["loc"])
    path = _clean_loc(raw_loc)
    kind = err["type"]
    value = err.get("input")
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        key = str(raw_loc[-1])
        model = _model_at(raw_loc[:-1])
        allowed = sorted(
            (info.alias or name) for name, info in model.model_fields.items()
        ) if model else []
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        text = f"unknown key {key!r}"
        if close:
            text += f"; did you mean {close[0]!r}?"
        if allowed:
            text += f" (allowed here: {', '.join(allowed)})"
        return source.problem(path, text)
    if kind == "missing":
        return source.problem(path, f"required key {path[-1]!r} is missing")
    if kind == "union_tag_invalid":
        return source.problem(
            (*path, "kind"),
            f"unknown link kind {err['ctx'].get('tag')!r}; expected one of: {', '.join(LINK_KINDS)}",
        )
    if kind == "value_error":
        return source.problem(path, msg.removeprefix("Value error, "))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return source.problem(path, f"expected a mapping (key: value, …), got {_show(value)}")
    if kind == "list_type":
        return source.problem(path, f"expected a list ([…] or '- ' items), got {_show(value)}")
    if kind.startswith("int_") or kind.startswith("bool_") or kind.startswith("string_"):
        return source.problem(path, f"{_lower_first(msg)}, got {_show(value)}")
    if kind == "literal_error":
        return source.problem(path, f"{_lower_first(msg.replace('Input should be', 'expected'))}, got {_show(value)}")
    if kind in ("greater_than_equal", "less_than_equal", "less_than", "greater_than", "too_short"):
        return source.problem(path, f"{_lower_first(msg.replace('Input should be', 'must be'))}, got {_show(value)}")
    return source.problem(path, f"{_lower_first(msg)} (got {_show(value)})")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
