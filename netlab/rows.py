"""`--format tsv`: a command's rows for scripts — a header line, then one line per row,
fields separated by a tab, in a fixed column order; a tab or newline inside a field
becomes a space, so every row is one line and `cut -f` finds its columns. (`text` is the
table people read, `json` the command's documented JSON: docs/json.md.)"""

from __future__ import annotations

from collections.abc import Sequence

FORMATS = ("text", "tsv", "json")


def tsv(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "".join("\t".join(_field(f) for f in row) + "\n" for row in [columns, *rows])


def _field(value: str) -> str:
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")
