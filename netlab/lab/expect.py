"""One expected value of a check, in any of three forms a lab file may write:

    table: 100                 # this value
    table: [100, 200]          # any of these (alternatives)
    table: {not: 100}          # anything but this; {not: [100, 200]}: none of these

`Expect[T]` validates each value as T (with T's own messages, at the key path the user
wrote: `expect.table.not`, `expect.table[1]`) and keeps the form, so a judge asks one
question — does the observation fit? (`admits`) — and words the expectation the same way
for every key (`words`: "100 or 200", "not 100", "neither 100 nor 200"). A list was
chosen over an `any_of:` key because lists already mean "any of these" for the node and
address keys of a check (`reply_src: [pod3, pod4]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, get_args

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

T = TypeVar("T")

# Tags of the forms in pydantic's error locations; netlab.lab.parse drops them from key paths.
FORM_TAG = "expect:"
_ONE, _ANY, _NOT, _READY = (FORM_TAG + f for f in ("one", "any", "not", "ready"))


class Expect(Generic[T]):
    """Immutable; a plain class, not a dataclass, so that pydantic takes its schema from
    __get_pydantic_core_schema__ rather than from the fields."""

    __slots__ = ("negated", "values")

    def __init__(self, values: tuple[T, ...], negated: bool = False) -> None:
        object.__setattr__(self, "values", values)  # one, or alternatives
        object.__setattr__(self, "negated", negated)  # {not: …}: none of them

    values: tuple[T, ...]
    negated: bool

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Expect is immutable ({name})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expect) and (self.values, self.negated) == (other.values, other.negated)

    def __hash__(self) -> int:
        return hash((self.values, self.negated))

    def __repr__(self) -> str:
        return f"Expect({self.data()!r})"

    def admits(self, fits: Callable[[T], bool]) -> bool:
        """Does an observation fit? `fits(value)` says whether it matches one expected value."""
        return any(fits(v) for v in self.values) != self.negated

    def admits_value(self, got: object) -> bool:
        return self.admits(lambda v: v == got)

    def words(self, show: Callable[[T], str] = str) -> str:
        """'100', '100 or 200', 'one of 1, 2, 3', 'not 100', 'neither 1 nor 2', 'none of 1, 2, 3'."""
        shown = [show(v) for v in self.values]
        if len(shown) == 1:
            return f"not {shown[0]}" if self.negated else shown[0]
        if len(shown) == 2:
            return f"neither {shown[0]} nor {shown[1]}" if self.negated else f"{shown[0]} or {shown[1]}"
        return ("none of " if self.negated else "one of ") + ", ".join(shown)

    def only(self) -> T | None:
        """The one value a positive expectation of one value names (else None)."""
        return self.values[0] if len(self.values) == 1 and not self.negated else None

    def written(self) -> str:
        """As a lab file writes it, in flow style: '100', '[100, main]', '{not: 100}'."""
        one = str(self.values[0]) if len(self.values) == 1 else "[" + ", ".join(map(str, self.values)) + "]"
        return f"{{not: {one}}}" if self.negated else one

    def data(self) -> Any:
        """As a lab file writes it."""
        one: Any = self.values[0] if len(self.values) == 1 else list(self.values)
        return {"not": one} if self.negated else one

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        args = get_args(source)
        item = handler.generate_schema(args[0]) if args else core_schema.any_schema()
        many = core_schema.list_schema(item, min_length=1)
        one_or_many = core_schema.tagged_union_schema(
            {_ONE: item, _ANY: many}, discriminator=lambda v: _ANY if isinstance(v, list) else _ONE
        )
        negation = core_schema.typed_dict_schema(
            {"not": core_schema.typed_dict_field(one_or_many)}, extra_behavior="forbid"
        )
        return core_schema.tagged_union_schema(
            {
                _ONE: core_schema.no_info_after_validator_function(lambda v: cls((v,)), item),
                _ANY: core_schema.no_info_after_validator_function(lambda v: cls(tuple(v)), many),
                _NOT: core_schema.no_info_after_validator_function(_negation(cls), negation),
                _READY: core_schema.is_instance_schema(cls),
            },
            discriminator=_form,
            custom_error_type="expect_form",
            custom_error_message="an expected value is a value, a list of values or {not: …}",
            serialization=core_schema.plain_serializer_function_ser_schema(lambda e: e.data()),
        )


def _negation(cls: type[Expect[Any]]) -> Callable[[dict[str, Any]], Expect[Any]]:
    def build(value: dict[str, Any]) -> Expect[Any]:
        inner = value["not"]
        return cls(tuple(inner) if isinstance(inner, list) else (inner,), negated=True)

    return build


def _form(value: Any) -> str | None:
    if isinstance(value, Expect):
        return _READY
    if isinstance(value, list):
        return _ANY
    if isinstance(value, dict):
        return _NOT if set(value) == {"not"} else None
    return _ONE
