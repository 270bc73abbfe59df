"""The one way in: a lab file → the explicit, validated `Lab` everything else works on.

The passes run in order, each collecting every problem it finds before stopping:

1. YAML syntax and duplicate keys (spec.source);
2. field types and unknown keys (lab.parse, pydantic);
3. the high-level sections and their expansion into plain nodes (expand);
4. cross-object rules on the explicit lab (lab.consistency).

When pass 2 finds problems, passes 3 and 4 still run on what did validate (lab.parse's
Salvage: the refused keys and entries cut out), so a misspelt node in a check is named in
the same run as a typo elsewhere; a complaint that may only follow from a cut is left out.

Nothing touches the kernel, so `netlab validate` and `netlab render` run without root.
A problem found in a generated node points at the `cluster:` key it came from.

A lab file may declare `variants:` (spec.variants): each is merged into the raw data
before pass 2 and loaded through the same passes as a lab of its own, `NAME-VARIANT`.
`load_lab` loads the one lab asked for (the base, or one variant), so a problem in
variant Y never refuses the base lab or variant X; `load_variants` loads them all and
lists every problem of any of them (`validate`, `render`). A problem in a variant points
at the variant's line and key path, or names the variant.

Between 2 and 3, the files nodes name (`nftables: [{file: …}]`, `iptables: [{file: …}]`,
relative to the lab file) are read, and the loaded lab carries their text instead: the
plan stays pure, `render` needs no file, and the fingerprint covers what is in them.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import pydantic

from netlab.errors import LabError, Problem, UsageError
from netlab.expand import expand
from netlab.expand.cluster import ClusterLayout
from netlab.lab.bounds import MAX_FILE_BYTES, TooBig, read_bounded
from netlab.lab.model import IptablesDump, Lab, NftRuleset, Node
from netlab.lab.parse import Salvage, SchemaError, cross_check, read_lab, validate_model
from netlab.lab.source import Path, Source, format_path, parse_yaml
from netlab.lab.variants import (
    VariantSource,
    apply_variant,
    declared_variants,
    split_variants,
    variant_lab_name,
    written,
)
from netlab.unchanged import peek_lab_name as peek_lab_name  # where it was before netlab.unchanged


@dataclass
class LabOrigin:
    """Where a loaded lab was written, for problems found after loading (the firewall
    preflight): the source map, where expansion put what it generated, and which rulesets
    and dumps were read from which file."""

    source: Source
    origins: dict[Path, Path] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)  # written path of an entry → its file, openable
    cluster: ClusterLayout | None = None  # what the expansion placed where (netlab graph)

    def written(self, path: Path) -> Path:
        """The path as written in the lab file (a generated node's is in `cluster:`, a
        variant's value under `variants.VARIANT`)."""
        path = _origin(path, self.origins)
        return self.source.written(path) if isinstance(self.source, VariantSource) else path

    def problem(self, path: Path, message: str) -> Problem:
        return self.source.problem(self.written(path), message)

    def text_start(self, entry: Path, key: str) -> tuple[Path, int | None]:
        """For an inline text (`ruleset:`, `save:`) of a list entry such as
        nodes.r.nftables[0]: the key path to name, and the line of the lab file its text's
        first line is on (None unless it is a literal block, `key: |`, whose lines map 1:1)."""
        written = self.written(entry)
        for path in ((*written, key), written, written[:-1]):  # also the short forms `nftables: |`
            if path in self.source.blocks and (path != written[:-1] or written[-1] == 0):
                return (*written, key), self.source.blocks[path]
        return (*written, key), None


def load_lab(path: str | FsPath, variant: str | None = None) -> Lab:
    """Read, validate and expand a lab file's base lab (with `variant`: that variant's lab
    alone); raises LabError (exit 2) listing every problem of that lab, UsageError for an
    unknown variant. Problems of the file's other variants do not count."""
    return load_lab_located(path, variant)[0]


def load_lab_located(path: str | FsPath, variant: str | None = None) -> tuple[Lab, LabOrigin]:
    """load_lab, and where each part of the lab was written."""
    data, source, problems = read_lab(path)
    if data is None:
        raise LabError(problems)
    return _load_one(data, source, problems, variant)


@dataclass(frozen=True)
class LabVariants:
    """A lab file's base lab and the lab of each of its variants, each with its origin."""

    base: tuple[Lab, LabOrigin]
    variants: dict[str, tuple[Lab, LabOrigin]] = field(default_factory=dict)

    def get(self, variant: str | None) -> tuple[Lab, LabOrigin]:
        return self.base if variant is None else self.variants[variant]

    def all(self) -> list[tuple[Lab, LabOrigin]]:
        """The base lab first, then the variants in file order."""
        return [self.base, *self.variants.values()]

    def named(self, name: str) -> Lab | None:
        """The lab (base or variant) called `name`, if the file has it."""
        return next((lab for lab, _ in self.all() if lab.name == name), None)


def load_variants(path: str | FsPath, variant: str | None = None) -> LabVariants:
    """Read a lab file and load its base lab and every variant; LabError lists every
    problem in any of them. `variant` (when given) must be one the file declares."""
    data, source, problems = read_lab(path)
    if data is None:
        raise LabError(problems)
    return _load_variants(data, source, problems, variant)


def load_named(path: str | FsPath, name: str) -> tuple[Lab, LabOrigin, str | None] | None:
    """The lab called `name` in a lab file — its base lab, or the variant whose lab has that
    name — with its origin and variant; None when the file defines no lab of that name.
    Only that lab is loaded: the file's other variants' problems do not count."""
    data, source, problems = read_lab(path)
    if data is None:
        raise LabError(problems)
    base = data.get("name") if isinstance(data, dict) else None
    if base == name:
        return (*_load_one(data, source, problems, None), None)
    for variant in declared_variants(data):
        if isinstance(base, str) and variant_lab_name(base, variant) == name:
            return (*_load_one(data, source, problems, variant), variant)
    return None


def load_lab_text(text: str, file: str = "<text>", variant: str | None = None) -> Lab:
    data, source, problems = parse_yaml(text, file)
    if data is None:
        raise LabError(problems)
    return _load_one(data, source, problems, variant)[0]


def load_variants_text(text: str, file: str = "<text>") -> LabVariants:
    """load_variants of a lab file's text: every lab in it, every problem of any."""
    data, source, problems = parse_yaml(text, file)
    if data is None:
        raise LabError(problems)
    return _load_variants(data, source, problems, None)


def load_lab_data(
    data: Any, source: Source | None = None, problems: list[Problem] | None = None, variant: str | None = None
) -> Lab:
    """Validate already-parsed data (a dict from a test, or YAML with its source map).
    Relative `file:`s are looked up next to the source's file, or in the current
    directory for a dict."""
    source = source or Source("<dict>")
    return _load_one(data, source, list(problems or []), variant)[0]


def variant_data(data: Any, variant: str, source: Source | None = None) -> dict[str, Any]:
    """The plain data of a variant's lab (named NAME-VARIANT, no `variants:`), for a copy
    of it written elsewhere (the pytest plugin's). Load the lab first: this assumes the
    data is valid."""
    source = source or Source("<dict>")
    _check_variant(data, source, variant)
    base, changes, _ = split_variants(data, source)
    return apply_variant(base, variant, changes[variant]).data


def _check_variant(data: Any, source: Source, variant: str | None) -> None:
    """An unknown variant is a usage error naming the ones there are."""
    if variant is None:
        return
    known = declared_variants(data)
    if variant in known:
        return
    name = data.get("name") if isinstance(data, dict) else None
    lab = f"lab {name}" if isinstance(name, str) else "the lab"
    lab += "" if source.file.startswith("<") else f" ({source.file})"
    if not known:
        raise UsageError(f"{lab} has no variants (no `variants:` section), so none called {variant!r}")
    close = difflib.get_close_matches(variant, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"{lab} has no variant {variant!r}{hint} (its variants: {', '.join(known)})")


def _load_one(data: Any, source: Source, problems: list[Problem], variant: str | None) -> tuple[Lab, LabOrigin]:
    """The base lab, or variant `variant`'s, and nothing else: its problems only (a
    problem in the part of the base it kept says which variant it is in)."""
    _check_variant(data, source, variant)
    base_data, changes, found = split_variants(data, source)
    if variant is None:
        where = LabOrigin(source)
        return _load(base_data, source, problems, where), where
    if variant not in changes:  # its own entry under `variants:` is malformed
        mine = format_path(("variants", variant))
        raise LabError([*problems, *(p for p in found if p.path == mine or p.path.startswith(f"{mine}."))])
    merged = apply_variant(base_data, variant, changes[variant])
    if merged.complaints:
        raise LabError([*problems, *(source.problem(path, message) for path, message in merged.complaints)])
    vsource = VariantSource.of(source, variant, merged.origins)
    vwhere = LabOrigin(vsource)
    return _load(merged.data, vsource, problems, vwhere), vwhere


def _load_variants(data: Any, source: Source, problems: list[Problem], variant: str | None) -> LabVariants:
    """The base lab, then every variant merged into it and loaded the same way; all
    problems of all of them at once (a problem the base has is not repeated per variant)."""
    _check_variant(data, source, variant)
    base_data, changes, found = split_variants(data, source)
    where = LabOrigin(source)
    try:
        base = _load(base_data, source, problems, where)
    except LabError as err:
        raise LabError([*err.problems, *found]) from None
    loaded: dict[str, tuple[Lab, LabOrigin]] = {}
    for name, change in changes.items():
        merged = apply_variant(base_data, name, change)
        if merged.complaints:
            found += [source.problem(path, message) for path, message in merged.complaints]
            continue
        vsource = VariantSource.of(source, name, merged.origins)
        vwhere = LabOrigin(vsource)
        try:
            loaded[name] = (_load(merged.data, vsource, [], vwhere), vwhere)
        except LabError as err:
            found += err.problems
    if found:
        raise LabError(found)
    return LabVariants((base, where), loaded)


def _load(data: Any, source: Source, problems: list[Problem] | None, where: LabOrigin) -> Lab:
    try:
        lab = validate_model(data, source, list(problems or []))
    except SchemaError as err:
        raise LabError([*err.problems, *_cross_refs_anyway(err.salvage, source)]) from None
    files: dict[Path, str] = {}
    lab = read_files(lab, source, files)
    where.files.update(
        {source.written(path) if isinstance(source, VariantSource) else path: shown for path, shown in files.items()}
    )
    expansion = expand(lab)
    if expansion.complaints:
        raise LabError([source.problem(path, message) for path, message in expansion.complaints])
    where.origins.update(expansion.origins)
    where.cluster = expansion.layout
    complaints = cross_check(expansion.lab)
    if complaints:
        raise LabError([source.problem(_origin(path, expansion.origins), message) for path, message in complaints])
    return expansion.lab


def _cross_refs_anyway(salvage: Salvage, source: Source) -> list[Problem]:
    """Pass 3 and 4 on what validated of a lab with schema errors, so one run names every
    problem. A complaint that may only follow from what was cut is left out: one inside an
    entry that lost something, or one that names a node that did."""
    if salvage.lab is None:
        return []
    expansion = expand(salvage.lab)
    complaints = expansion.complaints or [
        (_origin(path, expansion.origins), message) for path, message in cross_check(expansion.lab)
    ]
    return [
        source.problem(salvage.original(path), message)
        for path, message in complaints
        if not salvage.consequential(path)
    ]


# ---------------------------------------------------------------- files named by the lab


def lab_dir(source: Source) -> FsPath:
    """Where a lab's relative `file:`s are: next to the lab file (the current directory
    for a lab that is not from a file)."""
    if source.file.startswith("<"):
        return FsPath.cwd()
    return FsPath(source.file).parent


def read_files(lab: Lab, source: Source, files: dict[Path, str] | None = None) -> Lab:
    """The lab with every node's `file:` rulesets and dumps replaced by their text (a .json
    file, or one whose text starts with '{', is libnftables JSON). Raises LabError listing
    each file that cannot be read, at its `file:` key. `files` learns which entry came
    from which file (key path → the file's path, as messages show it)."""
    reader = _FileReader(source, {} if files is None else files)
    update: dict[str, Any] = {}
    nodes = {name: reader.node(n, ("nodes", name)) for name, n in lab.nodes.items()}
    if any(nodes[name] is not n for name, n in lab.nodes.items()):
        update["nodes"] = nodes
    if lab.cluster is not None:
        cluster = lab.cluster
        cluster_nodes = {name: reader.node(n, ("cluster", "nodes", name)) for name, n in cluster.nodes.items()}
        pods = {name: reader.node(n, ("cluster", "pods", name)) for name, n in cluster.pods.items()}
        if any(cluster_nodes[k] is not v for k, v in cluster.nodes.items()) or any(
            pods[k] is not v for k, v in cluster.pods.items()
        ):
            update["cluster"] = cluster.model_copy(update={"nodes": cluster_nodes, "pods": pods})
    if reader.problems:
        raise LabError(reader.problems)
    return lab.model_copy(update=update) if update else lab


class _FileReader:
    """read_files' work on one lab: each node's entries with a `file:`, and what went wrong."""

    def __init__(self, source: Source, found: dict[Path, str]) -> None:
        self.source, self.found = source, found
        self.base = lab_dir(source)
        self.problems: list[Problem] = []

    def read(self, name: str, path: Path) -> str | None:
        file = self.base / name
        shown = name if self.source.file.startswith("<") else os.path.normpath(file)
        try:
            text = read_bounded(file, MAX_FILE_BYTES, "a `file:`").decode("utf-8")
        except TooBig as err:
            return self._fail(path, f"{shown} {err}")
        except OSError as err:
            return self._fail(path, f"cannot read {shown}: {err.strerror}")
        except UnicodeDecodeError as err:
            return self._fail(path, f"{shown} is not UTF-8 text: {err.reason}")
        if not text.strip():
            return self._fail(path, f"{shown} is empty")
        self.found[path] = shown
        return text

    def _fail(self, path: Path, message: str) -> str | None:
        """Note a problem at the entry's `file:` key; None, as a failed read returns."""
        self.problems.append(self.source.problem((*path, "file"), message))
        return None

    def ruleset(self, r: NftRuleset, path: Path) -> NftRuleset:
        text = self.read(r.file, path) if r.file is not None else None
        if text is None or r.file is None:
            return r
        if not (r.file.endswith(".json") or text.lstrip().startswith("{")):
            return NftRuleset(ruleset=text)
        try:
            return NftRuleset.model_validate({"json": json.loads(text)})
        except pydantic.ValidationError as err:  # not {"nftables": [...]}
            why = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        except ValueError as err:  # not JSON at all
            why = f"not valid JSON: {err}"
        self.problems.append(self.source.problem((*path, "file"), f"{self.found[path]}: {why}"))
        return r

    def dump(self, d: IptablesDump, path: Path) -> IptablesDump:
        text = self.read(d.file, path) if d.file is not None else None
        if text is None:
            return d
        # The settings given besides `file:`, so `render` writes only what was written.
        kept = {k: getattr(d, k) for k in ("family", "noflush") if k in d.model_fields_set}
        return IptablesDump.model_validate({"save": text, **kept})

    def node(self, n: Node, path: Path) -> Node:
        update: dict[str, Any] = {}
        if any(r.file is not None for r in n.nftables):
            update["nftables"] = [self.ruleset(r, (*path, "nftables", i)) for i, r in enumerate(n.nftables)]
        if any(d.file is not None for d in n.iptables):
            update["iptables"] = [self.dump(d, (*path, "iptables", i)) for i, d in enumerate(n.iptables)]
        return n.model_copy(update=update) if update else n


def anchor_files(data: Any, base: FsPath) -> Any:
    """Plain lab data with every relative `file:` of a ruleset or dump made absolute
    against `base`, for a copy of the lab that is written somewhere else (the pytest
    plugin's renamed labs). Anything not shaped as expected is left for validation."""

    def entries(node: Any) -> None:
        for key in ("nftables", "iptables"):
            items = node.get(key) if isinstance(node, dict) else None
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("file"), str) and item["file"]:
                    item["file"] = str(base / item["file"])  # an absolute one stays as it is

    def nodes(section: Any) -> None:
        for node in section.values() if isinstance(section, dict) else []:
            entries(node)

    if isinstance(data, dict):
        nodes(data.get("nodes"))
        if isinstance(data.get("cluster"), dict):
            nodes(data["cluster"].get("nodes"))
            nodes(data["cluster"].get("pods"))
    return data


def _origin(path: Path, origins: dict[Path, Path]) -> Path:
    """Where a path in the expanded lab was written: `nodes.pod1.serve[0]` of a pod from
    `cluster.pods.pod1` is `cluster.pods.pod1.serve[0]`."""
    return written(path, origins)


__all__ = [
    "LabOrigin",
    "LabVariants",
    "anchor_files",
    "lab_dir",
    "load_lab",
    "load_lab_data",
    "load_lab_located",
    "load_lab_text",
    "load_named",
    "load_variants",
    "load_variants_text",
    "read_files",
    "variant_data",
    "variant_lab_name",
]
