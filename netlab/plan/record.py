"""Plan ops as plain JSON data and back: the state records the ops a lab was built with, so
a later `up` can tell what differs (netlab/reconcile) without the file the lab came from.

Generic over every frozen dataclass of netlab/plan (any op kind, and the kinds' nested
parts such as a link's `type`): an op is a mapping of its fields plus "op", its class
name; a nested dataclass carries "is", its class name; sequences come back as tuples
(an op's sequences are tuples, so ops stay hashable). A record naming a class this
netlab does not know raises UnknownOp: the state was written by another version."""

from __future__ import annotations

import dataclasses
from typing import Any

from netlab.plan import ops as _ops
from netlab.plan import removal as _removal


class UnknownOp(ValueError):
    """A recorded op of a kind this netlab does not have."""


_SCALARS = (str, int, bool, float, type(None))


def _classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in (_ops, _removal):
        for name, value in vars(module).items():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                found[name] = value
    return found


_CLASSES = _classes()
# each class's field names: dataclasses.fields() per op cost more than the rest of to_data
_NAMES = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES.values()}


def to_data(op: _ops.Op) -> dict[str, Any]:
    return {"op": type(op).__name__, **_fields(op)}


def _fields(obj: Any) -> dict[str, Any]:
    names = _NAMES.get(type(obj)) or tuple(f.name for f in dataclasses.fields(obj))
    return {name: _value(getattr(obj, name)) for name in names}


def _value(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"is": type(value).__name__, **_fields(value)}
    if isinstance(value, (tuple, list)):
        return [_value(v) for v in value]
    return value


def from_data(data: dict[str, Any]) -> _ops.Op:
    fields = dict(data)
    cls = _class(fields.pop("op", None))
    op = cls(**{k: _back(v) for k, v in fields.items()})
    if not isinstance(op, _ops.Op):
        raise UnknownOp(f"{cls.__name__} is not an op")
    return op


def _class(name: Any) -> type:
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownOp(f"no op kind {name!r} in this netlab")
    return cls


def _back(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict) and "is" in value:
        fields = dict(value)
        cls = _class(fields.pop("is"))
        return cls(**{k: _back(v) for k, v in fields.items()})
    if isinstance(value, dict) and "op" in value:
        return from_data(value)
    if isinstance(value, list):
        return tuple(_back(v) for v in value)
    return value


def ops_to_data(ops: tuple[_ops.Op, ...] | list[_ops.Op]) -> list[dict[str, Any]]:
    return [to_data(op) for op in ops]


def ops_from_data(data: list[dict[str, Any]]) -> list[_ops.Op]:
    """The ops back; UnknownOp (or TypeError for a field this netlab's op lacks) for a
    record another netlab version wrote."""
    try:
        return [from_data(d) for d in data]
    except TypeError as err:
        raise UnknownOp(str(err)) from None
