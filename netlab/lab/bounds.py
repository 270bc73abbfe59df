"""Limits on untrusted input: a lab file, and the files it names, are refused before anything
grows with them.

Three places grow with the input. Reading: a `file:` may be /dev/zero, a FIFO that never
ends, or a directory, so only regular files are read, and only up to a size (read_bounded,
which never blocks: a FIFO is opened non-blocking and refused by its type). Composing:
libyaml's composer recurses in C and a list nested 100 000 deep crashes the process, and
it shares an aliased node where our builder (source._Builder) makes a copy per use, so a
few hundred bytes of nested aliases (`&a [*b, *b, …]`) become gigabytes. scan_events
reads libyaml's event stream once, which holds no tree and does not recurse, and measures
nesting depth and the document's size with every alias and merge key expanded before the
composer runs. Constructing: a tag names a constructor; only YAML's core types are data.

The caps fit every shipped and benchmark lab with room to spare (the biggest, bench/policy
with 5000 namespaces, is 1 MB and about 110 000 values) and keep a refusal under a second
and 200 MB. docs/lab-file.md ("Limits") lists them.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

import yaml

MAX_LAB_BYTES = 4 * 1024 * 1024  # a lab file
MAX_FILE_BYTES = 8 * 1024 * 1024  # a ruleset or dump a lab names with `file:`
MAX_DEPTH = 64  # lists and mappings inside each other; lab files use about 10
MAX_SCHEMA_ERRORS = 1000  # more, and the file is not a lab: the first are listed, nothing is salvaged
MAX_NODES = 150_000  # scalars, lists and mappings, every alias expanded: ~1 s to parse
ALIAS_FACTOR = 10  # aliases may multiply the nodes written so far by this much …
ALIAS_SLACK = 10_000  # … or add this many, whichever is more

# The core schema's tags (YAML 1.2 §10.3) and `!`, which only says "not a plain scalar".
_CORE_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map"))
_NON_SPECIFIC = "!"


class TooBig(Exception):
    """A file that may not be read: its size, or what it is, is in the message."""


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; raises TooBig
    (a FIFO, device or directory, or a file over the limit) or OSError. `what` names the
    file in messages ("a lab file")."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TooBig(f"is {_kind(info.st_mode)}; {what} must be a regular file")
        if info.st_size > limit:
            raise TooBig(_too_big(info.st_size, limit, what))
        data = _read_upto(fd, limit + 1)  # a file still growing is measured by what it holds
        if len(data) > limit:
            raise TooBig(_too_big(len(data), limit, what, more=True))
        return data
    finally:
        os.close(fd)


def _read_upto(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0:
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except BlockingIOError:  # a regular file never says EAGAIN, but be sure not to spin
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN)) from None
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _too_big(size: int, limit: int, what: str, more: bool = False) -> str:
    at_least = "at least " if more else ""
    return f"is {at_least}{_size(size)}; {what} may be at most {_size(limit)}"


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB ({n} bytes)".replace(".0 MiB", " MiB")
    return f"{n} bytes"


def text_too_big(text: str, what: str) -> str | None:
    """For a text that did not come from read_bounded (a test's, `load_lab_text`'s)."""
    if len(text) <= MAX_LAB_BYTES:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return _too_big(size, MAX_LAB_BYTES, what) if size > MAX_LAB_BYTES else None


@dataclass(frozen=True)
class Excess:
    """What scan_events refused: the event it stopped at (its index in the stream, for
    path_at), the line (1-based) and what is wrong."""

    index: int
    line: int
    message: str


def scan_events(text: str, loader: type[yaml.SafeLoader]) -> Excess | None:
    """One pass over the YAML event stream: None if the document may be composed, else
    the first limit it crosses. Syntax errors are left to the composer, which explains them."""
    depth = 0
    written = expanded = 0
    sizes: dict[str, int] = {}  # anchor → its node's size with aliases expanded
    open_anchors: list[tuple[str, int, int]] = []  # (anchor, `expanded` at its start, depth)
    scalar, alias, end = yaml.ScalarEvent, yaml.AliasEvent, (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    try:
        for index, event in enumerate(yaml.parse(text, Loader=loader)):
            kind = type(event)
            if kind is scalar or kind in starts:
                written += 1
                expanded += 1
                tag = event.tag  # type: ignore[attr-defined]
                if tag is not None and tag not in _CORE_TAGS and tag != _NON_SPECIFIC:
                    return Excess(index, _line(event), _tag_message(tag))
                if expanded > MAX_NODES:
                    return Excess(
                        index,
                        _line(event),
                        (
                            f"the document has more than {MAX_NODES} values (scalars, lists and mappings); "
                            "a lab file may have at most that many"
                        ),
                    )
                anchor = event.anchor  # type: ignore[attr-defined]
                if kind is scalar:
                    if anchor is not None:
                        sizes[anchor] = 1
                    continue
                depth += 1
                if depth > MAX_DEPTH:
                    return Excess(
                        index,
                        _line(event),
                        (
                            f"lists and mappings are nested more than {MAX_DEPTH} levels deep here; "
                            "a lab file needs about 10"
                        ),
                    )
                if anchor is not None:
                    open_anchors.append((anchor, expanded - 1, depth))
            elif kind in end:
                if open_anchors and open_anchors[-1][2] == depth:
                    anchor, start, _ = open_anchors.pop()
                    sizes[anchor] = expanded - start
                depth -= 1
            elif kind is alias:
                name = event.anchor  # type: ignore[attr-defined]
                if any(a == name for a, _, _ in open_anchors):
                    return Excess(
                        index,
                        _line(event),
                        (
                            f"alias *{name} is inside the node its anchor &{name} names, which would "
                            "make it contain itself"
                        ),
                    )
                expanded += sizes.get(name, 0)  # an undefined alias is the composer's to explain
                if expanded > MAX_NODES or expanded > max(ALIAS_FACTOR * written, ALIAS_SLACK):
                    return Excess(index, _line(event), _alias_message(name, written, expanded))
    except yaml.YAMLError:
        return None
    return None


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


def _tag_message(tag: str) -> str:
    shown = "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag
    return (
        f"the tag {shown} is not allowed: a lab file holds plain data, and only YAML's core tags "
        "(!!str, !!int, !!float, !!bool, !!null, !!seq, !!map) may be written"
    )


def _alias_message(name: str, written: int, expanded: int) -> str:
    limit = min(MAX_NODES, max(ALIAS_FACTOR * written, ALIAS_SLACK))
    return (
        f"alias *{name} expands the document past {limit} values ({written} written so far, {expanded} "
        f"once aliases and merge keys are expanded); aliases may multiply what is written by at most "
        f"{ALIAS_FACTOR} (or add {ALIAS_SLACK} values)"
    )


def path_at(text: str, loader: type[yaml.SafeLoader], stop: int) -> tuple[str | int, ...]:
    """The key path of the node at event `stop` (an Excess's index): a second, slower pass,
    run only when the first refused the document, so the message can name the key."""
    frames: list[_Frame] = []
    starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    for index, event in enumerate(yaml.parse(text, Loader=loader)):
        kind = type(event)
        if kind in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
            frames.pop()
            continue
        if kind not in (yaml.ScalarEvent, yaml.AliasEvent, *starts):
            continue
        here = frames[-1].place(event) if frames else None
        if index == stop:
            return (*(p for f in frames for p in f.at), *(here or ()))
        if kind in starts:
            frames.append(_Frame(kind is yaml.MappingStartEvent, () if here is None else here))
    return ()


class _Frame:
    """An open list or mapping in path_at: where it is (relative to its parent) and where
    its next node goes."""

    def __init__(self, mapping: bool, at: tuple[str | int, ...]) -> None:
        self.mapping, self.at = mapping, at
        self.key: str | None = None  # a mapping's pending key, None while a key is expected
        self.next = 0  # a list's next index

    def place(self, event: yaml.Event) -> tuple[str | int, ...]:
        """The path of `event`'s node below this collection (a key's is empty: it names itself)."""
        if not self.mapping:
            self.next += 1
            return (self.next - 1,)
        if self.key is None:
            value = getattr(event, "value", None)
            self.key = str(value) if isinstance(event, yaml.ScalarEvent) else "?"
            return ()
        key, self.key = self.key, None
        return (key,)
