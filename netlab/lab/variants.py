"""Lab variants: the same lab with a few things changed, each built as a lab of its own.

A lab file may carry a top-level `variants:` mapping, variant name → changes. A variant
may hold any top-level lab key but `name` and `variants`; its changes are merged into the
lab's raw YAML data before validation, so every pass (types, cluster expansion,
cross-object rules, the firewall preflight) applies to the result unchanged:

- a mapping merges key by key (recursively) into the base's mapping;
- a list or a scalar replaces the base's value (a variant's `checks:` replace the base's);
- `null` deletes the key from the base.

The lab built from variant V of lab NAME is named `NAME-V`, so the base and its variants
can be up side by side. A problem in a value the variant wrote is reported at the
variant's line and key path (`variants.V.nodes.r.sysctls`); a problem the variant causes
in a part of the base it kept is reported there, prefixed with the variant's name.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from netlab.errors import Problem
from netlab.lab.source import Path, Source, format_path
from netlab.naming import variant_lab_name as variant_lab_name  # re-exported: it was defined here

# What a variant may change: every top-level key of a lab but its name and the variants.
VARIANT_KEYS = ("description", "requires", "tables", "cluster", "nodes", "checks")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # node names' charset (values.py)
LAB_NAME_LIMIT = 32  # values.LabName


def declared_variants(data: Any) -> list[str]:
    """The variant names a lab's raw data declares, in file order (none when the section
    is missing or malformed: validation reports that)."""
    section = data.get("variants") if isinstance(data, dict) else None
    return [str(k) for k in section] if isinstance(section, dict) else []


def split_variants(data: Any, source: Source) -> tuple[Any, dict[str, dict[str, Any]], list[Problem]]:
    """(the base lab's data without `variants:`, variant name → its changes, problems in
    the `variants:` section's shape). A variant with a problem is left out of the mapping."""
    if not isinstance(data, dict) or "variants" not in data:
        return data, {}, []
    base = {k: v for k, v in data.items() if k != "variants"}
    section = data["variants"]
    problems: list[Problem] = []
    if not isinstance(section, dict) or not section:
        got = "empty" if section is None or section == {} else f"a {type(section).__name__}"
        problems.append(
            source.problem(
                ("variants",),
                (
                    f"expected a mapping of variant name → changes, got {got}; e.g. "
                    "`variants: {no-route: {nodes: {c1: {routes: []}}}}` (or drop `variants:`)"
                ),
            )
        )
        return base, {}, problems
    name = base.get("name")
    out: dict[str, dict[str, Any]] = {}
    for variant, changes in section.items():
        at: Path = ("variants", variant)
        bad = False
        if not _NAME_RE.match(variant):
            problems.append(
                source.problem(
                    at,
                    (
                        f"variant name {variant!r} may use only letters, digits, '-' and '_', and must start "
                        "with a letter or digit (it becomes part of the lab's name)"
                    ),
                )
            )
            continue
        if isinstance(name, str) and len(variant_lab_name(name, variant)) > LAB_NAME_LIMIT:
            full = variant_lab_name(name, variant)
            problems.append(
                source.problem(
                    at,
                    (
                        f"the lab this variant builds is named {full!r}, {len(full)} characters; lab names have at "
                        f"most {LAB_NAME_LIMIT}: shorten the variant's name (or the lab's)"
                    ),
                )
            )
            bad = True
        if changes is None:
            changes = {}  # no changes: the base lab under another name
        if not isinstance(changes, dict):
            problems.append(
                source.problem(
                    at,
                    (
                        f"expected a mapping of the lab keys this variant changes ({', '.join(VARIANT_KEYS)}), "
                        f"got {_show(changes)}"
                    ),
                )
            )
            continue
        for key in changes:
            if key in VARIANT_KEYS:
                continue
            bad = True
            if key == "name":
                text = (
                    f"a variant cannot set `name:`; the lab it builds is named after the lab and "
                    f"the variant ({variant_lab_name(name if isinstance(name, str) else 'NAME', variant)})"
                )
            elif key == "variants":
                text = "variants do not nest; give every variant its own entry under the top-level `variants:`"
            else:
                close = difflib.get_close_matches(str(key), VARIANT_KEYS, n=1, cutoff=0.6)
                text = f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                text += f" (allowed in a variant: {', '.join(VARIANT_KEYS)})"
            problems.append(source.problem((*at, key), text))
        if not bad:
            out[variant] = changes
    return base, out, problems


@dataclass(frozen=True)
class Merged:
    """A variant applied to the base lab's data."""

    data: dict[str, Any]
    # Where the variant's values came from: a path of the merged data → the path it was
    # written at (`nodes.r.sysctls` → `variants.V.nodes.r.sysctls`), for each value the
    # variant added or replaced. Paths below one are translated by prefix.
    origins: dict[Path, Path] = field(default_factory=dict)
    complaints: list[tuple[Path, str]] = field(default_factory=list)  # at written paths


def apply_variant(base: dict[str, Any], variant: str, changes: dict[str, Any]) -> Merged:
    """The base lab's data with `changes` merged in (mappings key by key, lists and scalars
    replace, `null` deletes), named NAME-VARIANT. `base` is not modified."""
    root: Path = ("variants", variant)
    origins: dict[Path, Path] = {}
    complaints: list[tuple[Path, str]] = []

    def merge(into: dict[str, Any], change: dict[str, Any], path: Path) -> dict[str, Any]:
        out = dict(into)
        for key, value in change.items():
            here = (*path, key)
            if value is None:
                if key in out:
                    del out[key]
                    continue
                close = difflib.get_close_matches(str(key), [str(k) for k in out], n=1, cutoff=0.6)
                where = format_path(here)
                complaints.append(
                    (
                        (*root, *here),
                        (
                            f"`null` deletes a key of the lab, and the lab has no {where}"
                            + (f"; did you mean {close[0]!r}?" if close else "")
                        ),
                    )
                )
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value, here)
            else:
                out[key] = copy.deepcopy(value)
                origins[here] = (*root, *here)
        return out

    data = merge(base, changes, ())
    if isinstance(base.get("name"), str):
        data["name"] = variant_lab_name(base["name"], variant)
    return Merged(data, origins, complaints)


def written(path: Path, origins: dict[Path, Path]) -> Path:
    """Where a path of merged (or expanded) data was written: the deepest prefix of it
    that `origins` knows, re-rooted there; the path itself when none is known."""
    for n in range(len(path), 0, -1):
        found = origins.get(tuple(path[:n]))
        if found is not None:
            return (*found, *path[n:])
    return path


@dataclass
class VariantSource(Source):
    """The source map of a lab file, seen from one of its variants: a problem at a path of
    the merged lab is reported where the value was written (the variant's lines and key
    path), and one in a part the variant kept from the base says which variant it is in."""

    variant: str = ""
    origins: dict[Path, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, source: Source, variant: str, origins: dict[Path, Path]) -> VariantSource:
        return cls(source.file, source.lines, source.blocks, variant=variant, origins=origins)

    def written(self, path: Path) -> Path:
        return written(path, self.origins)

    def problem(self, path: Path, message: str) -> Problem:
        at = self.written(path)
        if at[:2] != ("variants", self.variant):
            message = f"in variant {self.variant}: {message}"
        return super().problem(at, message)


_IN_VARIANT = re.compile(r"^in variant [A-Za-z0-9_-]+: ")


def new_problems(found: list[Problem], seen: list[Problem]) -> list[Problem]:
    """Those of `found` that `seen` does not hold yet, a variant's problem in a part of the
    base it kept ("in variant V: …") counting as held when the base has it: a problem of
    the base is listed once, not once per variant; one only variants have, per variant."""
    out: list[Problem] = []
    for p in found:
        plain = Problem(p.file, p.line, p.path, _IN_VARIANT.sub("", p.message))
        if p not in seen and plain not in seen and p not in out:
            out.append(p)
    return out


def variant_diff(base: Any, variant: Any) -> dict[str, Any]:
    """The changes that make `base` into `variant` under the merge rules (both plain lab
    data): what `netlab render` writes as a variant of the explicit lab. Neither name is
    part of it (the variant's is derived)."""

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in a:
            if key not in b:
                out[key] = None
        for key, value in b.items():
            if key in a and a[key] == value:
                continue
            if key in a and isinstance(a[key], dict) and isinstance(value, dict):  # {}: delete each key
                out[key] = diff(a[key], value)
            else:
                out[key] = value
        return out

    return diff({k: v for k, v in base.items() if k != "name"}, {k: v for k, v in variant.items() if k != "name"})


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
