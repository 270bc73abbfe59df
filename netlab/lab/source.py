"""YAML text → plain Python data plus a map from key paths to line numbers.

PyYAML's composer gives every node its position; we construct the data ourselves so
we can remember where each key and item came from (and catch duplicate keys, which
PyYAML silently overwrites). The map lets every later error point at file:line.

A lab file is untrusted input: bounds.scan_events measures it before the composer runs.
"""

from __future__ import annotations

import functools
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from netlab.errors import Problem
from netlab.lab.bounds import path_at, scan_events, text_too_big

Path = tuple[str | int, ...]
Complaint = tuple[Path, str]  # a problem of the lab: where it is, and what is wrong

# libyaml's composer is ~10x faster (a 500-pod lab: 0.6 s → 0.06 s) and keeps node marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_LONGEST_SHOWN_KEY = 80


def format_path(path: Path) -> str:
    """('nodes', 'n1', 'routes', 2, 'via') → 'nodes.n1.routes[2].via'.

    A key that is not a plain word is quoted, so the path stays unambiguous and safe to
    print: `links["eth0.100"]` is one interface, not `eth0` then `100`; `nodes[".."]` is
    not `nodes...`; a control character in a name shows as \\x01, never raw on a terminal.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            if len(part) > _LONGEST_SHOWN_KEY:  # a hostile file's megabyte-long key
                part = part[:_LONGEST_SHOWN_KEY] + "…"
            shown = _shown_key(part)
            out += shown if shown[0] == "[" or out else shown[1:]
    return out


@functools.lru_cache(maxsize=4096)  # a plan formats the same few keys thousands of times
def _shown_key(key: str) -> str:
    """A key as format_path shows it after the path before it: `.key` or `["k.e.y"]`."""
    if _PLAIN_KEY.match(key):
        return f".{key}"
    return '["' + printable(key.replace("\\", "\\\\").replace('"', '\\"')) + '"]'


def printable(text: str) -> str:
    """`text` with control characters escaped: lab files are user input, and a message
    quoting a name must not move the cursor or recolour the user's terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Source:
    """Where a lab came from: file name and the line of every key path in it."""

    file: str
    lines: dict[Path, int] = field(default_factory=dict)
    # Literal block scalars (`key: |`): the line of their text's first line, so a line
    # number within the text (an nft error's) maps to a line of the file.
    blocks: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """Line of the deepest known prefix of `path` (a missing key points at its parent)."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return 0

    def problem(self, path: Path, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), printable(message))


class _Builder:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.constructor = yaml.SafeLoader("")
        self.explicit: dict[int, set[int]] = {}  # a merging mapping's id → its own keys (_own_keys)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.source.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            own = self._own_keys(node)
            # Merged keys come first; a key written here overrides a merged one (that is
            # what `<<` is for), but the same key written twice here is a mistake.
            chosen: dict[str, tuple[yaml.Node, yaml.Node]] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(
                        Problem(
                            self.source.file,
                            key_node.start_mark.line + 1,
                            format_path(path),
                            "a key must be a plain name, not a list or mapping",
                        )
                    )
                    continue
                # The key as written: every key in a lab is a name, and YAML 1.1 would
                # turn a node called `on` or `no` into True/False and `1.10` into 1.1.
                key = str(key_node.value)
                earlier = chosen.get(key)
                if earlier is not None and (own is None or (id(key_node) in own and id(earlier[0]) in own)):
                    self.problems.append(
                        Problem(
                            self.source.file,
                            key_node.start_mark.line + 1,
                            format_path((*path, key)),
                            f"duplicate key (first given on line {earlier[0].start_mark.line + 1}); "
                            "YAML would silently keep only the last one: merge the two",
                        )
                    )
                    continue
                chosen[key] = (key_node, value_node)
            out: dict[str, Any] = {}
            for key, (key_node, value_node) in chosen.items():
                child = (*path, key)
                self.source.lines[child] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.style == "|":
            self.source.blocks[path] = node.start_mark.line + 2  # the text starts below the '|'
        if path[-2:] == ("probe", "payload") and node.tag == _INT and str(node.value).lower().startswith("0x"):
            return node.value  # hex bytes as written: YAML 1.1 would read `0x4142` as the size 16706
        return self._scalar(node)

    def _own_keys(self, node: yaml.MappingNode) -> set[int] | None:
        """The keys written in a mapping that merges others in (`<<: *anchor`), which is
        then flattened (the merged keys put in); None for a mapping without a merge key:
        all its keys count as its own, and it needs no flattening."""
        own = self.explicit.get(id(node))
        if own is None:
            if not any(k.tag == _MERGE for k, _ in node.value):
                return None
            # Remembered before flatten_mapping rewrites the node: an anchor used twice is
            # flattened only once.
            own = self.explicit[id(node)] = {id(k) for k, _ in node.value if k.tag != _MERGE}
            self.constructor.flatten_mapping(node)  # resolve YAML merge keys (<<: *anchor)
        return own

    def _scalar(self, node: yaml.Node) -> Any:
        # The tag's constructor called directly: construct_object would also remember every
        # node it made (a second copy of a big lab in memory) for aliases we expand ourselves.
        if node.tag == _STR:
            return node.value
        construct = self.constructor.yaml_constructors.get(node.tag)
        if construct is None or not isinstance(node, yaml.ScalarNode):
            return self.constructor.construct_object(node, deep=True)
        return construct(self.constructor, node)


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"


def parse_yaml(text: str, file: str) -> tuple[Any, Source, list[Problem]]:
    """Parse one YAML document. Returns (data, source map, problems); data is None on syntax
    errors and on a document over the limits of lab.bounds."""
    source = Source(file)
    too_big = text_too_big(text, "a lab file")
    if too_big is not None:
        return None, source, [Problem(file, 1, "", f"the lab file {too_big}")]
    excess = scan_events(text, _COMPOSER)
    if excess is not None:
        path = path_at(text, _COMPOSER, excess.index)[:_SHOWN_DEPTH]
        return None, source, [Problem(file, excess.line, format_path(path), excess.message)]
    # The collector would walk every node the composer makes, many times over for a big
    # lab (a 10 MB file: 25 s instead of 2.6 s); the nodes form no cycles, so pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _compose_and_build(text, source)
    finally:
        if collecting:
            gc.enable()


_SHOWN_DEPTH = 8  # of a key path in a message about nesting: enough to find the place


def _compose_and_build(text: str, source: Source) -> tuple[Any, Source, list[Problem]]:
    file = source.file
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 0
        return None, source, [Problem(file, line, "", f"YAML syntax error: {_explain(err, text)}")]
    except yaml.YAMLError as err:
        return None, source, [Problem(file, 0, "", f"YAML error: {err}")]
    if root is None:
        return None, source, [Problem(file, 1, "", "the file is empty; a lab needs at least `name:` and `nodes:`")]
    builder = _Builder(source)
    try:
        data = builder.build(root, ())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        return None, source, [Problem(file, line, "", f"YAML error: {err}")]
    return data, source, builder.problems


def _explain(err: yaml.MarkedYAMLError, text: str) -> str:
    """Say what a YAML syntax error means for a lab file, the same with libyaml or PyYAML
    (their wording differs), and what would fix it. Unknown errors keep the parser's words."""
    problem = err.problem or ""
    lines = text.splitlines()
    mark = err.problem_mark
    line, col = (mark.line, mark.column) if mark else (0, 0)
    here = lines[line][col:] if line < len(lines) else ""
    ctx_line = err.context_mark.line + 1 if err.context_mark else line + 1
    where = f"column {col + 1}: "
    if here.startswith("\t") or (here[:1].isspace() and "\t" in lines[line][: col + 1]):
        return where + "a tab; indent with spaces (YAML does not allow tabs in indentation)"
    if "cannot start any token" in problem:
        return where + f"a plain value cannot start with {here[:1]!r}; put the value in quotes"
    if (
        "expected <block end>" in problem
        or "did not find expected key" in problem
        or ("expected '-' indicator" in problem)
    ):
        return _indentation(lines, line)  # names its columns itself
    if "mapping values are not allowed" in problem:
        return where + (
            "unexpected ': '; a value containing ': ' must be quoted (\"a: b\"), "
            "a NODE:IFNAME has no space after the colon, and a nested key goes on its own line"
        )
    for opening, closing, what in (("[", "]", "list"), ("{", "}", "mapping")):
        if f"',' or '{closing}'" in problem:
            return where + (
                f"the {opening} … {closing} {what} opened on line {ctx_line} is not closed "
                f"with '{closing}', or a value in it needs quotes"
            )
    if "node content" in problem and here.startswith(":"):
        return where + ("a value that starts with ':' (like ::1/128 or ::/0) must be quoted inside [ ] and { }")
    if "undefined alias" in problem:
        name = here[1:].split()[0].rstrip(",]}") if here.startswith("*") else "?"
        return where + f"alias *{name} refers to no anchor; define &{name} before it is used"
    if "another document" in problem:
        return "the file holds more than one YAML document ('---'); a lab file holds one lab"
    if "end of stream" in problem and "quoted scalar" in (err.context or ""):
        return f"the quoted string that starts on line {ctx_line} is never closed"
    ctx = f" ({err.context})" if err.context else ""
    return f"{where}{problem}{ctx}"


def _indentation(lines: list[str], line: int) -> str:
    """Explain a block-structure error at 0-based `line` by comparing it with the line above."""

    def indent(text: str) -> int:
        return len(text) - len(text.lstrip(" "))

    above = next(
        (
            i
            for i in range(min(line, len(lines)) - 1, -1, -1)
            if lines[i].strip() and not lines[i].lstrip().startswith("#")
        ),
        None,
    )
    this = lines[line] if line < len(lines) else ""
    if above is None:
        return "the indentation of this line does not fit the file"
    a, b = indent(this), indent(lines[above])
    if lines[above].lstrip().startswith("- ") and not this.lstrip().startswith("-") and a <= b:
        return (
            f"this line is not a '- ' item, but is indented like the list on line {above + 1}; "
            "a list cannot also have keys (indent the key under its item)"
        )
    if a != b:
        return (
            f"bad indentation: this line starts in column {a + 1}, the line above it "
            f"(line {above + 1}) in column {b + 1}; keys of one mapping must line up"
        )
    return "the indentation of this line does not fit the lines above it"


def walk_paths(data: Any, path: Path = ()) -> Iterator[Path]:
    """Every key path in plain data (used by tests and by `render`)."""
    yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from walk_paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from walk_paths(v, (*path, i))
