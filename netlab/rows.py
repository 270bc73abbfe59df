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


def table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, ruled: bool, title: str | None = None, styled: bool
) -> tuple[str, int]:
    """The table rich draws for `Table(show_edge=False)` (ruled: cells padded, the header
    ruled off, `│` between columns, the title in italics above) or for `Table(box=None,
    pad_edge=False, show_edge=False)` (columns two spaces apart), as long as it fits:
    the text (bold header and italic title when `styled`) and its width in cells, to
    compare with the terminal's. rich takes ~1 ms a row to lay a table out, a second for
    a lab of 500 pods; this takes microseconds. (tests/unit/test_cli_output.py holds it
    to rich's own drawing.)"""
    from rich.cells import cell_len
    from rich.control import strip_control_codes

    body = [[strip_control_codes(cell) for cell in row] for row in rows]
    widths = [max([cell_len(c), *(cell_len(row[i]) for row in body)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str], bar: str) -> str:
        padded = [cell + " " * (w - cell_len(cell)) for cell, w in zip(cells, widths, strict=True)]
        return f"{bar.join(f' {p} ' for p in padded)}" if ruled else "  ".join(padded)

    bold, italic, plain = ("\x1b[1m", "\x1b[3m", "\x1b[0m") if styled else ("", "", "")
    head = line(columns, "┃")
    lines = [f"{italic}{strip_control_codes(title)}{plain}"] if title is not None else []
    lines.append(f"{bold}{head}{plain}")
    if ruled:
        lines.append("╇".join("━" * (w + 2) for w in widths))
    lines += [line(cells, "│") for cells in body]
    return "".join(f"{text}\n" for text in lines), cell_len(head)
