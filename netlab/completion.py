"""Shell completion: the scripts `netlab completion bash|zsh|fish` prints (click's), and
what completes each argument — lab names, node names after a lab, lab files, variant and
check names from the lab file.

Completion runs as the user at the prompt, usually not root (`sudo netlab <TAB>` asks
netlab as the user), and must answer at once: labs and nodes come from /run/netns
(readable by anyone; namespaces are LAB.NODE) and the root-only state directory when it
can be read, variants and checks from the lab file's YAML as it stands (no validation).
Nothing here raises: a completion that cannot be computed offers nothing.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from netlab import naming
from netlab.naming import is_lab_file, split_netns_name

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_NETLAB_COMPLETE"


def script(cli: click.Command, shell: str) -> str:
    """The completion script for `shell`, to be evaluated by it (see --help of `completion`)."""
    cls = get_completion_class(shell)
    assert cls is not None, shell  # click ships bash, zsh and fish
    return cls(cli, {}, "netlab", COMPLETE_VAR).source()


def _namespaces() -> list[tuple[str, str]]:
    try:
        names = os.listdir(naming.NETNS_DIR)
    except OSError:
        return []
    return [split for name in names if (split := split_netns_name(name))]


def lab_names() -> list[str]:
    """Labs that are up: by their namespaces, and by their state files where readable."""
    labs = {lab for lab, _ in _namespaces()}
    try:
        from netlab.state import state_labs

        labs |= set(state_labs())
    except OSError:
        pass
    return sorted(labs)


def _node_names(lab: str) -> list[str]:
    return sorted(node for owner, node in _namespaces() if owner == lab)


def complete_lab(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A lab that is up, or a lab file: the "file" entry first, as click's bash script
    then uses the shell's file completion only when no lab matched."""
    labs = [CompletionItem(lab) for lab in lab_names() if lab.startswith(incomplete)]
    return [CompletionItem(incomplete, type="file"), *([] if is_lab_file(incomplete) else labs)]


def _lab_param(ctx: click.Context) -> str | None:
    for key in ("lab", "target"):
        value = ctx.params.get(key)
        if isinstance(value, str) and value:
            return value
    return _from_words(ctx)[0]


def _variant_param(ctx: click.Context) -> str | None:
    value = ctx.params.get("variant") or _from_words(ctx)[1]
    return value if isinstance(value, str) else None


def _from_words(ctx: click.Context) -> tuple[str | None, str | None]:
    """(the first argument, --variant's value) from the command line being completed.
    When it ends in an option that wants a value (`--variant <TAB>`), click's parse of it
    gives up and ctx.params holds nothing; the words themselves are in $COMP_WORDS (set
    by click's scripts for every shell)."""
    line = os.environ.get("COMP_WORDS", "")
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote
        words = line.split()
    valued = {
        opt
        for p in ctx.command.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for opt in p.opts
    }
    first, variant = None, None
    rest = words[words.index(str(ctx.info_name)) + 1 :] if ctx.info_name in words else []
    for prev, word in zip(["", *rest], rest, strict=False):
        if prev == "--variant":
            variant = word
        elif prev not in valued and not word.startswith("-") and first is None:
            first = word
    return first, variant


def _lab_of(ctx: click.Context) -> str | None:
    """The name of the lab the command line names (a lab file: the name it declares)."""
    target = _lab_param(ctx)
    if target is None or not is_lab_file(target):
        return target
    name = _lab_yaml(target).get("name")
    variant = _variant_param(ctx)
    return f"{name}-{variant}" if isinstance(name, str) and variant else name if isinstance(name, str) else None


def complete_node(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A node of the lab named earlier on the command line."""
    lab = _lab_of(ctx)
    return [CompletionItem(n) for n in _node_names(lab) if n.startswith(incomplete)] if lab else []


def complete_log_source(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`netlab logs LAB` narrows to a node, or to one log (netlab.logs.SOURCES)."""
    from netlab.logs import SOURCES

    return [*complete_node(ctx, param, incomplete), *(CompletionItem(s) for s in SOURCES if s.startswith(incomplete))]


def complete_node_if(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """NODE: (the interfaces need root to be read: the node is what completes)."""
    if ":" in incomplete:
        return []
    return [CompletionItem(f"{item.value}:") for item in complete_node(ctx, param, incomplete)]


def _lab_yaml(path: str) -> dict[str, Any]:
    try:
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except Exception:  # a file being edited, not YAML, unreadable: nothing to offer
        return {}
    return data if isinstance(data, dict) else {}


def _lab_file_of(ctx: click.Context) -> str | None:
    target = _lab_param(ctx)
    if target is None:
        return None
    if is_lab_file(target):
        return target
    try:
        from netlab.state import read_state

        st = read_state(target)
    except Exception:  # not root, or an unreadable state
        return None
    return st.source if st is not None else None


def complete_variant(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A variant of the lab file on the command line."""
    path = _lab_file_of(ctx)
    variants = _lab_yaml(path).get("variants") if path else None
    names = [str(v) for v in variants] if isinstance(variants, dict) else []
    return [CompletionItem(v) for v in names if v.startswith(incomplete)]


def complete_check(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A check of the lab (its file's `checks:`, and the variant's when one is given)."""
    path = _lab_file_of(ctx)
    if path is None:
        return []
    data = _lab_yaml(path)
    checks = list(data.get("checks") or [])
    variant = _variant_param(ctx)
    variants = data.get("variants")
    if variant and isinstance(variants, dict) and isinstance(variants.get(variant), dict):
        checks = list(variants[variant].get("checks") or checks)
    names = [str(c["name"]) for c in checks if isinstance(c, dict) and "name" in c]
    # bash inserts what it is given as it is (zsh and fish quote it themselves): a name
    # with spaces must come quoted, or it would be several words.
    quote = shlex.quote if os.environ.get(COMPLETE_VAR, "").startswith("bash") else str
    return [CompletionItem(quote(n)) for n in names if incomplete.lower() in n.lower()]
