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


@dataclasses.dataclass(frozen=True)
class _Kind:
    """A recorded class: its fields' names, and how to make one from a record fast."""

    cls: type
    names: tuple[str, ...]
    defaults: dict[str, Any]
    known: frozenset[str]
    required: frozenset[str]  # the fields without a default
    # Set the fields without __init__ (a frozen dataclass's sets each through
    # object.__setattr__: 0.03 s for a 500-pod lab's 4540 ops); not for a class
    # whose __init__ does more than store its fields.
    direct: bool

    @classmethod
    def of(cls, kind: type) -> _Kind:
        fields = dataclasses.fields(kind)
        plain = not hasattr(kind, "__post_init__") and all(
            f.init and f.default_factory is dataclasses.MISSING for f in fields
        )
        defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        names = tuple(f.name for f in fields)
        return cls(kind, names, defaults, frozenset(names), frozenset(names) - defaults.keys(), plain)

    def make(self, fields: dict[str, Any]) -> Any:
        if not self.direct or not self.required <= fields.keys() or not fields.keys() <= self.known:
            return self.cls(**fields)  # an unknown or missing field: __init__ says which (TypeError)
        obj: Any = object.__new__(self.cls)
        obj.__dict__.update((name, fields[name] if name in fields else self.defaults[name]) for name in self.names)
        return obj


def _classes() -> dict[str, _Kind]:
    found: dict[str, _Kind] = {}
    for module in (_ops, _removal):
        for name, value in vars(module).items():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                found[name] = _Kind.of(value)
    return found


_CLASSES = _classes()
_KINDS = {kind.cls: kind for kind in _CLASSES.values()}


def to_data(op: _ops.Op) -> dict[str, Any]:
    return {"op": type(op).__name__, **_fields(op)}


def _fields(obj: Any) -> dict[str, Any]:
    kind = _KINDS.get(type(obj))
    names = kind.names if kind is not None else tuple(f.name for f in dataclasses.fields(obj))
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
    kind = _class(fields.pop("op", None))
    op = kind.make({k: _back(v) for k, v in fields.items()})
    if not isinstance(op, _ops.Op):
        raise UnknownOp(f"{kind.cls.__name__} is not an op")
    return op


def _class(name: Any) -> _Kind:
    kind = _CLASSES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise UnknownOp(f"no op kind {name!r} in this netlab")
    return kind


def _back(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict) and "is" in value:
        fields = dict(value)
        kind = _class(fields.pop("is"))
        return kind.make({k: _back(v) for k, v in fields.items()})
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
