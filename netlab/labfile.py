"""The one way in: a lab file → the explicit, validated `Lab` everything else works on.

The passes run in order, each collecting every problem it finds before stopping:

1. YAML syntax and duplicate keys (spec.source);
2. field types and unknown keys (spec.load, pydantic);
3. the high-level sections and their expansion into plain nodes (expand);
4. cross-object rules on the explicit lab (spec.checks).

Nothing touches the kernel, so `netlab validate` and `netlab render` run without root.
A problem found in a generated node points at the `cluster:` key it came from.

Between 2 and 3, the files nodes name (`nftables: [{file: …}]`, `iptables: [{file: …}]`,
relative to the lab file) are read, and the loaded lab carries their text instead: the
plan stays pure, `render` needs no file, and the fingerprint covers what is in them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import pydantic

from netlab.errors import LabError, Problem
from netlab.expand import expand
from netlab.spec.load import cross_check, read_lab, validate_model
from netlab.spec.model import IptablesDump, Lab, NftRuleset, Node
from netlab.spec.source import Path, Source, parse_yaml


@dataclass(frozen=True)
class LabOrigin:
    """Where a loaded lab was written, for problems found after loading (the firewall
    preflight): the source map, where expansion put what it generated, and which rulesets
    and dumps were read from which file."""

    source: Source
    origins: dict[Path, Path] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)  # written path of an entry → its file, openable

    def written(self, path: Path) -> Path:
        """The path as written in the lab file (a generated node's is in `cluster:`)."""
        return _origin(path, self.origins)

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


def load_lab(path: str | FsPath) -> Lab:
    """Read, validate and expand a lab file; raises LabError (exit 2) listing every problem."""
    return load_lab_located(path)[0]


def load_lab_located(path: str | FsPath) -> tuple[Lab, LabOrigin]:
    """load_lab, and where each part of the lab was written."""
    data, source, problems = read_lab(path)
    if data is None:
        raise LabError(problems)
    where = LabOrigin(source)
    return _load(data, source, problems, where), where


def load_lab_text(text: str, file: str = "<text>") -> Lab:
    data, source, problems = parse_yaml(text, file)
    if data is None:
        raise LabError(problems)
    return load_lab_data(data, source, problems)


def load_lab_data(data: Any, source: Source | None = None, problems: list[Problem] | None = None) -> Lab:
    """Validate already-parsed data (a dict from a test, or YAML with its source map).
    Relative `file:`s are looked up next to the source's file, or in the current
    directory for a dict."""
    source = source or Source("<dict>")
    return _load(data, source, problems, LabOrigin(source))


def _load(data: Any, source: Source, problems: list[Problem] | None, where: LabOrigin) -> Lab:
    lab = validate_model(data, source, list(problems or []))
    lab = read_files(lab, source, where.files)
    expansion = expand(lab)
    if expansion.complaints:
        raise LabError([source.problem(path, message) for path, message in expansion.complaints])
    where.origins.update(expansion.origins)
    complaints = cross_check(expansion.lab)
    if complaints:
        raise LabError([source.problem(_origin(path, expansion.origins), message)
                        for path, message in complaints])
    return expansion.lab


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
    base = lab_dir(source)
    problems: list[Problem] = []
    found: dict[Path, str] = {} if files is None else files

    def read(name: str, path: Path) -> str | None:
        file = base / name
        shown = name if source.file.startswith("<") else os.path.normpath(file)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            problems.append(source.problem((*path, "file"), f"cannot read {shown}: {err.strerror}"))
            return None
        except UnicodeDecodeError as err:
            problems.append(source.problem((*path, "file"), f"{shown} is not UTF-8 text: {err.reason}"))
            return None
        if not text.strip():
            problems.append(source.problem((*path, "file"), f"{shown} is empty"))
            return None
        found[path] = shown
        return text

    def kept(entry: NftRuleset | IptablesDump, *keys: str) -> dict[str, Any]:
        """The settings given besides `file:`, so `render` writes only what was written."""
        return {k: getattr(entry, k) for k in keys if k in entry.model_fields_set}

    def ruleset(r: NftRuleset, path: Path) -> NftRuleset:
        text = read(r.file, path) if r.file is not None else None
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
        problems.append(source.problem((*path, "file"), f"{found[path]}: {why}"))
        return r

    def dump(d: IptablesDump, path: Path) -> IptablesDump:
        text = read(d.file, path) if d.file is not None else None
        if text is None:
            return d
        return IptablesDump.model_validate({"save": text, **kept(d, "family", "noflush")})

    def node(n: Node, path: Path) -> Node:
        update: dict[str, Any] = {}
        if any(r.file is not None for r in n.nftables):
            update["nftables"] = [ruleset(r, (*path, "nftables", i)) for i, r in enumerate(n.nftables)]
        if any(d.file is not None for d in n.iptables):
            update["iptables"] = [dump(d, (*path, "iptables", i)) for i, d in enumerate(n.iptables)]
        return n.model_copy(update=update) if update else n

    update: dict[str, Any] = {}
    nodes = {name: node(n, ("nodes", name)) for name, n in lab.nodes.items()}
    if any(nodes[name] is not n for name, n in lab.nodes.items()):
        update["nodes"] = nodes
    if lab.cluster is not None:
        cluster = lab.cluster
        cluster_nodes = {name: node(n, ("cluster", "nodes", name)) for name, n in cluster.nodes.items()}
        pods = {name: node(n, ("cluster", "pods", name)) for name, n in cluster.pods.items()}
        if any(cluster_nodes[k] is not v for k, v in cluster.nodes.items()) or \
                any(pods[k] is not v for k, v in cluster.pods.items()):
            update["cluster"] = cluster.model_copy(update={"nodes": cluster_nodes, "pods": pods})
    if problems:
        raise LabError(problems)
    return lab.model_copy(update=update) if update else lab


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
    for n in range(len(path), 0, -1):
        written = origins.get(tuple(path[:n]))
        if written is not None:
            return (*written, *path[n:])
    return path
