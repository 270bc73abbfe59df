"""The `netlab` command: parses arguments, calls lifecycle, prints. No logic of its own.

Exit codes: 0 ok · 1 failed · 2 bad input or usage (nothing created) · 3 not root or
kernel feature missing · 130/143 interrupted by SIGINT/SIGTERM (what was done is undone).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading

from netlab import interrupts

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "netlab":
    # Before the imports below (half a second on a slow machine): a Ctrl-C while they
    # load ends the command with one line instead of a KeyboardInterrupt traceback.
    interrupts.handle_signals()
    # A command allocates millions of short-lived objects: at Python's default threshold
    # (700) the collector ran ~230 times in a 500-pod reconcile, 0.05 s of its 0.45 s of CPU.
    gc.set_threshold(50_000, 20, 100)

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from netlab import __version__, completion, json_output
from netlab.errors import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    Interrupted,
    LabError,
    NetlabError,
    Problem,
    UsageError,
    require_root,
)
from netlab.naming import is_lab_file
from netlab.wording import plural

_as_command = __name__ == "__main__" or os.path.basename(sys.argv[0]) == "netlab"  # not under tests

if TYPE_CHECKING:
    from rich.console import Console

    from netlab import lifecycle
    from netlab import status as lab_status
    from netlab.impair import Changed
    from netlab.probes.checks import LabContext

# Start-up is part of every command's time (`netlab --version`, `down` of a lab that is not
# up): only click loads here. The pipeline (pydantic models, pyroute2, libnftables: ~0.5 s)
# is imported by the commands that use it, rich by the first line printed.


# Wide enough for any row: output that is not a terminal is never wrapped or cut.
UNWRAPPED_WIDTH = 100_000


class _LazyConsole:
    """A rich Console made on first use, fitting where its output goes: on a terminal,
    its width (or $COLUMNS) and colour (unless $NO_COLOR); into a pipe or file, one line
    per table row, however wide, and no colour. rich alone would wrap piped output at
    the width of whatever terminal stdin or stderr is, else at 80 columns."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def is_terminal(self) -> bool:
        if self._console is None and not self._forced():
            return bool(self._stream().isatty())  # as rich decides, without importing it (0.03 s)
        return bool(self.__getattr__("is_terminal"))

    def print(self, *objects: Any, markup: bool | None = None, end: str = "\n", **options: Any) -> None:
        """A plain line into a pipe or file is written as it is: a command's start-up
        then loads no rich (a reconcile's output is one line)."""
        plain = markup is False and not options and all(isinstance(o, str) for o in objects)
        if self._console is None and plain and not self._forced() and not self._stream().isatty():
            self._stream().write(" ".join(objects) + end)
            return
        self.__getattr__("print")(*objects, markup=markup, end=end, **options)

    def _stream(self) -> Any:
        return sys.stderr if self._options.get("stderr") else sys.stdout

    @staticmethod
    def _forced() -> bool:
        return any(os.environ.get(v) for v in ("FORCE_TERMINAL", "TTY_COMPATIBLE", "FORCE_COLOR"))

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True, **self._options)
            if not self._console.is_terminal:
                self._console.width = UNWRAPPED_WIDTH
        return getattr(self._console, name)


out: Console = _LazyConsole()  # type: ignore[assignment]
err: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]

EPILOG = """\b
Exit codes: 0 ok, 1 failed, 2 bad input or usage (nothing created),
            3 not root or a kernel feature is missing,
            130/143 interrupted by Ctrl-C/SIGTERM (what was done is undone).
Namespaces are named LAB.NODE: `ip netns exec LAB.NODE CMD` works too.
A lab file's variant NAME (`variants:`) is built with --variant NAME, as lab LAB-NAME.
"""

_F = TypeVar("_F", bound=Callable[..., Any])
_VARIANT_HELP = (
    "Use the lab file's variant NAME (its `variants:` section): the lab merged with the "
    "variant's changes, named LAB-NAME."
)


def _load_pipeline(module: str = "netlab.lifecycle") -> None:
    """Import the pipeline (pydantic models, pyroute2, libnftables) before the command
    changes anything: a signal meanwhile ends it as one during start-up does. A command
    that only reads an up lab needs no more than `netlab.context` and the observers; a
    host's agent, `netlab.multihost.agent`."""
    import importlib

    from netlab import timing

    # The modules live as long as the command: no collection need walk what they make
    # (a pass over the 50000 objects of pydantic's schemas cost 0.008 s), then or later.
    collecting = _as_command and gc.isenabled()
    if collecting:
        gc.disable()
    if _as_command:
        _no_pydantic_plugins()
    try:
        with interrupts.loading(), timing.phase("import the pipeline"):
            importlib.import_module(module)
    finally:
        if collecting:
            gc.freeze()
            gc.enable()


def _no_pydantic_plugins() -> None:
    """The command's own process runs no pydantic plugins. pydantic looks for them when it
    builds the first model: it imports importlib.metadata (with email, csv, zipfile) and
    reads the entry points of every installed distribution, ~0.01 s of each command that
    loads a lab. Its loader's one function answers "none" instead (the loader is imported
    by name from pydantic.plugin._schema_validator; with another pydantic, an unused stub)."""
    import types

    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        loader = types.ModuleType(name, "netlab: no pydantic plugins in the netlab command")
        loader.get_plugins = tuple  # type: ignore[attr-defined]
        sys.modules[name] = loader


def _variant_option(help: str = _VARIANT_HELP) -> Callable[[_F], _F]:
    return click.option(
        "--variant", metavar="NAME", default=None, shell_complete=completion.complete_variant, help=help
    )


def _hosts_option(help: str) -> Callable[[_F], _F]:
    return click.option("--hosts", metavar="FILE", envvar="NETLAB_HOSTS", default=None, help=help)


def _only_option(help: str) -> Callable[[_F], _F]:
    return click.option("--only", multiple=True, metavar="WORDS", shell_complete=completion.complete_check, help=help)


def _format_option(rows: str) -> Callable[[_F], _F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "tsv", "json"]),
        default=None,
        help=f"text: the table (default); tsv: a header, then one tab-separated line per {rows}, "
        "for scripts (cut -f); json: the same as --json.",
    )


def _output_format(as_json: bool, fmt: str | None) -> str:
    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} ask for two outputs; give one")
    return "json" if as_json else fmt or "text"


def _write_raw(text: str) -> None:
    """Text for scripts, as it is: rich would turn a TSV's tabs into spaces."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _driver() -> Any:
    from netlab.kernel.netlink import NetlinkDriver  # pyroute2 import only for commands that need it

    return NetlinkDriver()


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="netlab")
def cli() -> None:
    """Build real Linux network labs (namespaces, veth, bridges, VXLAN, routes, rules)
    from a YAML lab file, and take them down again without leaving anything behind.

    \b
    A five-minute tour:
      netlab validate labs/docker-bridge.yaml     # check the file (no root needed)
      netlab up --dry-run labs/docker-bridge.yaml # print the plan as ip(8) commands
      netlab render labs/flannel-vxlan.yaml       # a cluster: section spelled out as plain nodes
      sudo netlab up labs/docker-bridge.yaml      # build it for real
      sudo netlab status docker-bridge            # nodes, interfaces, addresses
      sudo netlab check docker-bridge             # run the lab's checks: real traffic
      sudo netlab exec docker-bridge c1 -- ping -c1 172.17.0.3
      sudo netlab down docker-bridge              # remove everything
      sudo netlab vm run -- netlab check --up labs/ipvs-smoke.yaml   # IPVS/VRF on a kernel without them

    \b
    Variants (a lab's `variants:`, e.g. the broken datapath next to the working one):
      sudo netlab check --up LAB.yaml --variant NAME   # lab LAB-NAME: the variant's checks
    """


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One document for all FILES: {"schema": "netlab/validate/v1", "files": […]}; if any has a problem, '
    "the error document listing every file's problems (docs/json.md).",
)
def validate(files: tuple[str, ...], as_json: bool) -> int:
    """Check lab FILES (no root needed).

    Every problem is listed with file:line, the key path and what would be right.
    A file with `variants:` is valid when its lab and every variant are; each variant is
    checked as the lab it builds, and a problem in one points at the variant's lines or
    names the variant. (`up`/`check` build one lab: another variant's problem does not
    refuse it.)
    As root, nodes' nftables rulesets and iptables dumps are also tried, each node's in a
    throwaway network namespace (as `netlab up` does first), and sysctl names are looked up
    in a fresh namespace's /proc/sys; without root the rulesets are not tried, and sysctl
    names missing from netlab's list of known ones are warnings. Exits 2 if any file has a
    problem.

    \b
    Examples:
      netlab validate labs/docker-bridge.yaml
      netlab validate labs/*.yaml                 # every lab in a directory, e.g. in CI
      sudo netlab validate my-lab.yaml            # rulesets tried in throwaway namespaces too
      netlab validate --json labs/*.yaml | jq '.files[] | {file, lab, nodes}'
    """
    bad: list[LabError] = []
    valid: list[dict[str, Any]] = []
    for file in files:
        try:
            labs, warnings, notes = _validate_file(file)
        except LabError as e:
            bad.append(e)
            if not as_json:  # with --json, every file's problems are the one error at the end
                err.print(str(e), markup=False)
            continue
        lab = labs.base[0]
        if as_json:
            valid.append(_validated_json(file, lab, list(labs.variants), warnings, notes))
            continue
        if labs.variants:
            notes.append(f"{plural(len(labs.variants), 'variant')}: {', '.join(labs.variants)}")
        note = "".join(f" ({n})" for n in notes)
        out.print(f"✓ {file}: lab {lab.name} — {_size(lab)}{note}", markup=False)
    if as_json and bad:
        raise LabError([p for e in bad for p in e.problems], f"{plural(len(bad), 'lab file')} of {len(files)}")
    if as_json:
        _write_raw(json_output.dumps("validate", {"files": valid}) + "\n")
    return EXIT_BAD_INPUT if bad else 0


def _validate_file(file: str) -> tuple[Any, list[Problem], list[str]]:
    """The file's lab and variants, its warnings (printed) and notes on what was not
    checked; LabError with every problem of the lab and its variants."""
    from netlab.lab.variants import new_problems
    from netlab.load import load_variants
    from netlab.preflight import check_firewall, check_sysctls, has_firewall, not_checked_note, sysctl_warnings

    labs = load_variants(file)
    notes: list[str] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for lab, where in labs.all():
        if os.geteuid() == 0:  # against a fresh namespace's /proc/sys, as `up` does
            try:
                check_sysctls(lab, where)
            except LabError as e:
                problems += new_problems(e.problems, problems)
        else:  # against a list of names: the kernel that runs the lab may have more
            warnings += new_problems(sysctl_warnings(lab, where), warnings)
        if has_firewall(lab) and os.geteuid() == 0:
            try:
                check_firewall(lab, where)  # in throwaway namespaces: `up` would refuse the same
            except LabError as e:
                problems += new_problems(e.problems, problems)
        elif has_firewall(lab) and not notes:
            notes.append(not_checked_note(lab))
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False)
    if problems:
        raise LabError(problems)
    return labs, warnings, notes


def _validated_json(
    file: str, lab: Any, variants: list[str], warnings: list[Problem], notes: list[str]
) -> dict[str, Any]:
    """One valid file of `validate --json` (netlab/schemas/validate.v1.json)."""
    from netlab.lab.parse import topology

    return {
        "file": file,
        "lab": lab.name,
        "nodes": len(lab.nodes),
        "interfaces": len(topology(lab).interfaces),
        "variants": variants,
        "warnings": [json_output.problem_json(w) for w in warnings],
        "notes": notes,
    }


def _size(lab: Any) -> str:
    from netlab.lab.parse import topology

    return f"{plural(len(lab.nodes), 'node')}, {plural(len(topology(lab).interfaces), 'interface')}"


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the explicit lab as JSON instead of YAML: "
    '{"schema": "netlab/render/v1", "lab": LAB} (`jq .lab` is a lab file).',
)
@_variant_option("Print the explicit form of the variant NAME's lab alone (named LAB-NAME, without `variants:`).")
def render(file: str, as_json: bool, variant: str | None) -> int:
    """Print the explicit form of the lab in FILE (no root needed).

    High-level sections are expanded into the plain nodes a user could have written:
    `cluster:` becomes the underlay switch, each node's eth0, cni0 and flannel.1 (or
    host-gw routes), the neighbour and FDB entries flanneld writes, and a namespace per
    pod. The output is itself a lab file: `netlab up` on it builds the same kernel state.

    A file with `variants:` renders as its explicit lab followed by `variants:`, each
    variant written as what it changes in the explicit lab, so `netlab up --variant
    NAME` on the output builds the same as on FILE. With --variant NAME, only that
    variant's lab, spelled out.

    \b
    Examples:
      netlab render labs/flannel-vxlan.yaml > /tmp/explicit.yaml
      netlab up --dry-run /tmp/explicit.yaml     # the same plan as the original
      netlab render labs/lvs-nat.yaml --variant dnat-only --json | jq '.lab.nodes | keys'
    """
    from netlab.lab.render import lab_data, render_yaml
    from netlab.lab.variants import variant_diff
    from netlab.load import load_lab, load_variants

    labs = load_variants(file) if variant is None else None  # one variant alone: its own problems only
    lab = labs.base[0] if labs is not None else load_lab(file, variant)
    variants = None
    if labs is not None and labs.variants:
        base = lab_data(lab)
        variants = {name: variant_diff(base, lab_data(vlab)) for name, (vlab, _) in labs.variants.items()}
    if as_json:
        data = lab_data(lab) | ({"variants": variants} if variants else {})
        out.print(json_output.dumps("render", {"lab": data}), markup=False)
    else:
        what = f"variant {variant} of {file}" if variant else file
        header = (
            f"lab {lab.name}, rendered by netlab {__version__} from {what}: the explicit form,\n"
            "every object spelled out (`netlab up` on this file builds the same kernel state)"
        )
        out.print(render_yaml(lab, header, variants), end="", markup=False)
    return 0


@cli.command()
@click.argument("target", shell_complete=completion.complete_lab)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["svg", "dot", "mermaid", "json"]),
    default=None,
    help="What to write (default: from -o's extension, else svg).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE",
    help="Write to FILE instead of standard output.",
)
@_variant_option("Draw the lab of the file's variant NAME (LAB-NAME); with a lab name, the lab LAB-NAME that is up.")
def graph(target: str, fmt: str | None, output: str | None, variant: str | None) -> int:
    """Draw the topology of TARGET (a lab file, or the name of a lab that is up).

    Namespaces are boxes, a pod's box inside its cluster node's; interfaces carry their
    addresses; bridges are switches, with what is plugged into them below; veths are
    lines; VXLAN devices meet in their overlay (VNI, UDP port, the underlay address each
    sends from); services point at their endpoints; a router's routes, rules, IPVS
    services and firewall tables are in a note. Many pods on one bridge become a table.
    No root needed: a lab that is up is drawn from the lab file its state names.

    \b
    Formats: svg (Graphviz's `dot`, apt-get install graphviz), dot, mermaid (GitHub
    renders it in Markdown), json (the model: every namespace, interface, wire, overlay
    and service).

    \b
    Examples:
      netlab graph labs/flannel-vxlan.yaml -o flannel.svg
      netlab graph labs/kube-proxy-iptables.yaml --format mermaid
      netlab graph labs/lvs-nat.yaml --variant dnat-only --format dot | dot -Tpng > lvs.png
      sudo netlab graph flannel-vxlan --format json     # a lab that is up
    """
    from netlab.graph import load_graph, render

    if fmt is None:
        ext = os.path.splitext(output or "")[1].lstrip(".").lower()
        fmt = {"": "svg", "mmd": "mermaid", "gv": "dot"}.get(ext, ext)
        if fmt not in ("svg", "dot", "mermaid", "json"):
            raise UsageError(
                f"-o {output}: netlab graph writes .svg, .dot (.gv), .mmd (.mermaid) or .json; give "
                "--format, or for a PNG: netlab graph LAB --format dot | dot -Tpng > LAB.png"
            )
    text = render(load_graph(target, variant), fmt)
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        out.print(text, end="", markup=False)
    return 0


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan as ip(8)-like commands; change nothing (no root needed). For a lab up "
    "from an older version of FILE (as root): what reconciling it would make, change and take away.",
)
@click.option("--replace", is_flag=True, help="If the lab is up, take it down and build it again from FILE.")
@_variant_option()
@_hosts_option(
    "Run the lab over the hosts of inventory FILE (Ansible's YAML form; default $NETLAB_HOSTS), "
    "through ssh: see docs/multihost.md. With --dry-run: the placement and each host's plan."
)
# a host's part of a lab over hosts: built only by the coordinator's version of netlab (a
# netlab without this option refuses it, which is as good)
@click.option("--expect-version", hidden=True, default=None)
def up(
    file: str, dry_run: bool, replace: bool, variant: str | None, hosts: str | None, expect_version: str | None
) -> int:
    """Build the lab in FILE: namespaces, links, addresses, routes, rules, sysctls, commands.

    If anything fails (or you press Ctrl-C), whatever was created is removed again and
    the failing lab object is named with the kernel's message. Running `up` again on a
    lab that is up from the same file changes nothing.

    On a lab that is up from an older version of FILE, `up` reconciles: it changes the
    running lab in place into what FILE now says (only what differs; what cannot change in
    place, such as a link's kind, is rebuilt, and --dry-run says so). If a change fails
    (or you press Ctrl-C), the lab is put back as it was. --replace rebuilds it whole.

    With --variant NAME, the lab file's variant NAME is built instead, as lab LAB-NAME:
    it can be up next to the lab itself (`netlab check LAB-NAME`, `netlab down LAB-NAME`).

    \b
    Examples:
      netlab up --dry-run labs/docker-bridge.yaml    # the plan as ip(8) commands, no root
      sudo netlab up labs/docker-bridge.yaml
      sudo netlab up labs/lvs-nat.yaml --variant dnat-only   # lab lvs-nat-dnat-only
      sudo netlab up labs/docker-bridge.yaml         # again after editing it: changed in place
      sudo netlab up --replace labs/docker-bridge.yaml
    """
    if expect_version is not None and expect_version != __version__:
        raise UsageError(f"this is netlab {__version__}, the coordinator's is {expect_version}: nothing was built")
    if hosts is not None:
        return _up_on_hosts(file, dry_run, variant, hosts)
    if not (dry_run or replace) and (lab := _up_from_this_file(file, variant)) is not None:
        out.print(f"lab {lab} is already up from this file; nothing changed", markup=False)
        return 0
    _load_pipeline()
    from netlab import lifecycle

    if dry_run:
        if replace:
            raise UsageError("--dry-run and --replace do not go together (--dry-run alone prints the build plan)")
        out.print(lifecycle.dry_run(file, variant), end="", markup=False)
        return 0
    driver = _driver()
    started = time.monotonic()
    try:
        with _progress("building") as tick:
            result = lifecycle.up(file, driver, progress=tick, variant=variant, replace=replace)
    finally:
        driver.close()
    took = time.monotonic() - started
    if result.already_up:
        out.print(f"lab {result.lab} is already up from this file; nothing changed", markup=False)
        return 0
    if result.reconciled is not None:
        _print_reconciled(result.lab, result.reconciled, took)
        interrupts.success_reported(f"lab {result.lab} was reconciled; it stays so")
        return 0
    serving = f", {plural(result.services, 'responder')}" if result.services else ""
    rebuilt = " (it was up: taken down and built again)" if result.replaced else ""
    out.print(
        f"lab {result.lab} is up{rebuilt}: {plural(len(result.plan.namespaces), 'node')}, "
        f"{plural(len(result.done), 'operation')}{serving} in {took:.2f} s",
        markup=False,
    )
    if sys.stdout.isatty():
        check = f"netlab check {result.lab} · " if result.checks else ""
        out.print(
            f"  next: {check}netlab status {result.lab} · netlab exec {result.lab} NODE -- CMD · "
            f"netlab down {result.lab}",
            markup=False,
            style="dim",
        )
    interrupts.success_reported(f"lab {result.lab} was up; it stays up (netlab down {result.lab} removes it)")
    return 0


def _up_from_this_file(file: str, variant: str | None) -> str | None:
    """The lab's name if it is up from exactly this file (netlab.unchanged), told without
    loading it; None when that cannot be told so (then loading it decides, as always)."""
    if os.geteuid() != 0:
        return None
    from netlab import timing, unchanged

    with timing.phase("an unchanged file?"):
        return unchanged.up_from_file(file, variant)


def _up_on_hosts(file: str, dry_run: bool, variant: str | None, hosts: str) -> int:
    from netlab import timing

    # the coordinator builds nothing itself: the lab's model and the split, not the kernel's side
    if _as_command:
        _no_pydantic_plugins()
    with interrupts.loading(), timing.phase("import the coordinator"):
        from netlab.multihost import lifecycle as multihost
        from netlab.multihost.render import render_split

    with timing.phase("hosts: lab loaded, placed and split"):
        inventory, split = multihost.load_split(file, variant, hosts)
    if dry_run:
        out.print(render_split(split, inventory), end="", markup=False)
        return 0
    result = multihost.up(file, variant, inventory, split)
    on = ", ".join(f"{h} ({plural(n, 'node')})" for h, n in result.hosts.items())
    if len(result.already_up) == len(result.hosts):
        out.print(f"lab {result.lab} is already up on {on} from this file; nothing changed", markup=False)
    else:
        links = plural(len(split.tunnels), "link")
        out.print(f"lab {result.lab} is up on {on}, {links} between hosts, in {result.seconds:.2f} s", markup=False)
    interrupts.success_reported(
        f"lab {result.lab} was up; it stays up (netlab down {result.lab} --hosts {hosts} removes it)"
    )
    return 0


def _down_on_hosts(target: str, variant: str | None, hosts: str) -> int:
    from netlab.multihost import engine
    from netlab.multihost import lifecycle as multihost
    from netlab.multihost.inventory import load_inventory

    inventory = load_inventory(hosts)
    if is_lab_file(target):
        _load_pipeline()
        from netlab.teardown import resolve_lab_name

        lab = resolve_lab_name(target, variant)
    else:
        lab = _lab_name(target, variant)
    result = multihost.down(lab, inventory)
    for r in result.replies:
        if r.code == 0:
            out.print(f"{r.host}: {r.out.strip().splitlines()[-1] if r.out.strip() else 'done'}", markup=False)
        else:
            err.print(f"{r.host}: not taken down: {r.why()}", markup=False)
    if result.unreachable:
        names = ", ".join(r.host for r in result.unreachable)
        raise engine.HostsFailed(
            f"lab {lab} is down on every host but {names}; run `netlab down {lab} --hosts {hosts}` again "
            "once it is back"
        )
    return 0


def _print_reconciled(lab: str, rec: Any, took: float) -> None:
    if rec.empty:
        out.print(f"lab {lab} is up; what changed in the file needs no change in the kernel", markup=False)
        return
    c = rec.counts()
    out.print(
        f"lab {lab} reconciled in place: {c['+']} made, {c['~']} changed, {c['-']} taken away in {took:.2f} s",
        markup=False,
    )
    for what in rec.rebuilt:
        out.print(f"  rebuilt {what}", markup=False)


@contextmanager
def _progress(what: str) -> Iterator[Any]:
    """A progress bar on a terminal; silence when output goes to a file or pipe."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn(f"{what}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True) as bar:
        task = bar.add_task(what, total=None)
        started = False

        def tick(_done: object) -> None:  # an Op built, or a check judged
            nonlocal started
            if not started:
                started = True
            bar.advance(task)

        yield tick


@cli.command()
@click.argument("target", required=False, shell_complete=completion.complete_lab)
@click.option("--all", "all_", is_flag=True, help="Take down every lab netlab finds (by state and by mark).")
@click.option("--yes", "-y", is_flag=True, help="With --all: do not ask (needed when there is no terminal to ask on).")
@_variant_option("With TARGET a file or a lab name: the lab of its variant NAME (LAB-NAME).")
@_hosts_option(
    "Take the lab down on every host of inventory FILE (default $NETLAB_HOSTS); an unreachable "
    "host is named and the others cleaned: run it again once the host is back."
)
def down(target: str | None, all_: bool, yes: bool, variant: str | None, hosts: str | None) -> int:
    """Remove lab TARGET (a lab name or its file) and everything in it.

    Works without a state file too (after a crash or `kill -9`): netlab finds the lab's
    namespaces by the mark it puts on them, and never removes unmarked ones.
    Taking down a lab that is not up is not an error. `--all` lists the labs it would
    remove and asks first on a terminal; without one, it needs --yes.

    \b
    Examples:
      sudo netlab down docker-bridge
      sudo netlab down labs/lvs-nat.yaml --variant dnat-only
      sudo netlab down --all            # lists the labs and asks
      sudo netlab down --all --yes      # in a script
    """
    if bool(target) == all_:
        raise UsageError("give a lab name or file, or --all (not both)")
    if variant and all_:
        raise UsageError("--variant names one lab's variant; it does not go with --all")
    if hosts is None and target and not all_:
        hosts = _recorded_inventory(target, variant)
    if hosts is not None:
        if all_:
            raise UsageError("--hosts takes down one lab: give its name or file, not --all")
        return _down_on_hosts(str(target), variant, hosts)
    if target and _never_there(target, variant):
        out.print(f"lab {_lab_name(target, variant)} was not up; nothing to remove", markup=False)
        return 0
    if target and is_lab_file(target):
        _load_pipeline()  # to read the file; `down NAME` needs neither pydantic nor the lab schema
    from netlab import teardown

    driver = _driver()
    try:
        reports = (
            teardown.down_all(driver, None if yes else _confirm_down_all)
            if all_
            else [teardown.down(str(target), driver, variant)]
        )
    finally:
        driver.close()
    for r in reports:
        if r.unreadable is not None:
            err.print(
                f"  the state file {r.unreadable.path} {r.unreadable.why}: removed it, and took down what "
                "the netlab marks show",
                markup=False,
            )
        if r.deleted or r.had_state:
            ended = f" and ended its {plural(len(r.stopped), 'process', 'processes')}" if r.stopped else ""
            out.print(f"lab {r.lab} is down: removed {plural(len(r.deleted), 'namespace')}{ended}", markup=False)
        else:
            out.print(f"lab {r.lab} was not up; nothing to remove", markup=False)
        for name in r.skipped:
            err.print(
                f"  left {name}: it looks like lab {r.lab}'s but has no netlab mark "
                f"(remove it with `ip netns del {name}` if it is yours)",
                markup=False,
            )
    if all_ and not reports:
        out.print("no labs are up", markup=False)
    return 0


def _confirm_down_all(labs: list[str]) -> None:
    """Ask on a terminal before removing every lab; refuse (exit 2) where nobody can answer."""
    listing = f"{plural(len(labs), 'lab')} would be taken down: {', '.join(labs)}"
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            f"down --all removes every lab on this machine ({listing}); nothing was removed: "
            "without a terminal to ask on, give --yes"
        )
    err.print(listing, markup=False)
    if not click.confirm("take them all down?", default=False, err=True):
        raise UsageError("nothing was removed")


def _lab_name(target: str, variant: str | None) -> str:
    return f"{target}-{variant}" if variant else target


def _recorded_inventory(target: str, variant: str | None) -> str | None:
    """The inventory lab TARGET (a name) was built over, when this machine built it over
    hosts and it is not up here: then `check LAB`, `status LAB`, `down LAB` mean it."""
    from netlab.multihost.record import read_record
    from netlab.naming import is_lab_file
    from netlab.state import state_path

    if is_lab_file(target) or os.path.exists(state_path(_lab_name(target, variant))):
        return None
    record = read_record(_lab_name(target, variant))
    return record.inventory if record is not None else None


def _start_agents_early(target: str, variant: str | None, hosts: str | None) -> None:
    """A lab this machine built over hosts (by name, not up here): its hosts' agents start
    now, while this process imports the pipeline and loads the lab (netlab.multihost.early)."""
    if is_lab_file(target) or (hosts is None and _recorded_inventory(target, variant) is None):
        return
    from netlab.multihost import early

    early.start(_lab_name(target, variant), hosts)


def _never_there(target: str, variant: str | None) -> bool:
    """A lab name (not a file) of which nothing exists, asked as root: answered without
    the pipeline's imports, so `down` of a lab that is not up takes no time."""
    from netlab.teardown import nothing_of

    return os.geteuid() == 0 and not is_lab_file(target) and nothing_of(_lab_name(target, variant))


@cli.command()
@click.argument("lab", required=False, shell_complete=completion.complete_lab)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--brief",
    is_flag=True,
    help="One line per lab: its status, counts of nodes, interfaces and running responders, its file. "
    "With LAB, one line per node: its state, counts of interfaces, addresses, routes and the ports it serves.",
)
@_format_option("interface (with --brief: per lab, or per node with LAB)")
@_variant_option("With LAB: the lab of its variant NAME (LAB-NAME).")
@_hosts_option(
    "LAB is up over the hosts of inventory FILE (default $NETLAB_HOSTS, else the one `up --hosts` "
    "recorded for LAB): each host's part, merged, with the host of each node."
)
def status(lab: str | None, as_json: bool, brief: bool, fmt: str | None, variant: str | None, hosts: str | None) -> int:
    """Show labs that are up: nodes, interfaces, addresses, state.

    With LAB (a name or file), only that lab. Labs whose namespaces exist without a
    state file show as "orphaned" (take them down with `netlab down LAB`); a state file
    netlab cannot read shows as "state unreadable", with what to do. Each responder
    process shows as running or dead (with how it ended, when its log says).

    \b
    Examples:
      sudo netlab status --brief                 # a line per lab
      sudo netlab status flannel-scale --brief   # a line per node: interfaces, addresses, routes, responders
      sudo netlab status flannel-scale --format tsv | awk -F'\t' '$5 != "up"'
      sudo netlab status flannel-scale --json | jq '.labs[0].nodes | keys'
    """
    from netlab import status as lab_status
    from netlab.rows import tsv

    fmt = _output_format(as_json, fmt)
    if variant and not lab:
        raise UsageError("--variant needs LAB (a lab name or file)")
    if lab is not None and (hosts := hosts if hosts is not None else _recorded_inventory(lab, variant)):
        return _status_on_hosts(lab, variant, hosts, fmt, brief)
    if hosts is not None:
        raise UsageError("status --hosts shows one lab: give its name or file")
    per_node = brief and lab is not None
    # Routes are counted where they are shown: a line per node, and the JSON.
    labs = lab_status.status(lab, variant, routes=per_node or fmt == "json")
    columns, rows = (
        (lab_status.NODE_COLUMNS, lab_status.node_rows)
        if per_node
        else (lab_status.LAB_COLUMNS, lab_status.lab_rows)
        if brief
        else (lab_status.LINK_COLUMNS, lab_status.link_rows)
    )
    if fmt == "json":
        _write_raw(json_output.dumps("status", {"labs": [lab_status.to_json(s) for s in labs]}) + "\n")
    elif fmt == "tsv":
        _write_raw(tsv(columns, [row for s in labs for row in rows(s)]))
    elif not labs:
        out.print("no labs are up", markup=False)
    elif brief:
        _print_rows(columns, [row for s in labs for row in rows(s)])
    else:
        _print_status(labs)
    return 0


def _print_rows(columns: tuple[str, ...], rows: list[list[str]]) -> None:
    if _print_fast(columns, rows, ruled=False):
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row))
    out.print(table)


def _print_fast(columns: Sequence[str], rows: list[list[str]], *, ruled: bool, title: str | None = None) -> bool:
    """The table drawn as rich would, fast (see rows.table), unless it is too wide for the
    terminal: then False, and rich's table wraps its cells to fit."""
    from netlab.rows import table

    text, width = table(
        columns, rows, ruled=ruled, title=title, styled=out.is_terminal and out.color_system is not None
    )
    if out.is_terminal and width > out.width:
        return False
    out.file.write(text)
    out.file.flush()
    return True


def _print_status(labs: list[lab_status.LabStatus]) -> None:
    from netlab.status import LINK_COLUMNS, cluster_lines, link_rows

    for s in labs:
        title = f"lab {s.lab} — {s.status}" + (f" — {s.source}" if s.source else "")
        rows = [row[1:] for row in link_rows(s)]
        impaired = any(row[-1] for row in rows)
        columns = LINK_COLUMNS[1 : None if impaired else -1]
        rows = [row if impaired else row[:-1] for row in rows]
        if not _print_fast(columns, rows, ruled=True, title=title):
            from rich.table import Table
            from rich.text import Text

            table = Table(title=title, title_justify="left", show_edge=False)
            for col in columns:
                table.add_column(col, overflow="fold")  # wrapped, never cut: an address stays whole
            for row in rows:
                table.add_row(*map(Text, row))
            out.print(table)
        for line in cluster_lines(s.cluster):
            out.print(line, markup=False)
        if s.version is not None:
            out.print(f"  version: {s.version}", markup=False)
        for h in s.responders:
            out.print(f"  responders: {h}", markup=False)
        if s.problem:
            err.print(f"  lab {s.lab}: {s.problem}", markup=False)


def _status_on_hosts(target: str, variant: str | None, hosts: str, fmt: str, brief: bool) -> int:
    from netlab import status as lab_status
    from netlab.multihost import checks, status
    from netlab.naming import netns_name
    from netlab.rows import tsv

    seen = status.status(checks.over_hosts(target, variant, hosts, "status"))
    s = seen.lab
    if fmt == "json":
        lab = lab_status.to_json(s)
        for node, view in lab["nodes"].items():
            # its host's problem says why it has no links
            missing: dict[str, Any] = {"namespace": netns_name(s.lab, node), "links": [], "routes": None, "serves": []}
            lab["nodes"][node] = {**(view or missing), "host": seen.host_of[node]}
        lab["hosts"] = {h: {"problem": seen.problems.get(h)} for h in dict.fromkeys(seen.host_of.values())}
        _write_raw(json_output.dumps("status", {"labs": [lab]}) + "\n")
        return EXIT_FAILED if seen.problems else 0
    # one lab: --brief is a line per node, as on one machine
    columns = ("host", *(lab_status.NODE_COLUMNS if brief else lab_status.LINK_COLUMNS))
    rows = [[seen.host_of[row[1]], *row] for row in (lab_status.node_rows if brief else lab_status.link_rows)(s)]
    if fmt == "tsv":
        _write_raw(tsv(columns, rows))
    elif brief:
        _print_rows(columns, rows)
    else:  # one lab: its name goes in the title, not in a column
        out.print(f"lab {s.lab} — {s.status} — {s.source}", markup=False)
        _print_rows((columns[0], *columns[2:]), [[row[0], *row[2:]] for row in rows])
        for host, found in seen.responders.items():
            for h in found:
                out.print(f"  responders on {host}: {h}", markup=False)
    for host, why in seen.problems.items():
        err.print(f"  host {host}: {why}", markup=False)
    return EXIT_FAILED if seen.problems else 0


@cli.command()
@click.argument("target", shell_complete=completion.complete_lab)
@click.option(
    "--up",
    "build",
    is_flag=True,
    help="Build the lab from TARGET (a file) first and take it down afterwards (a lab that was already up is left up).",
)
@_only_option("Run only the checks whose name contains WORDS (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON (nothing else on stdout).")
@_format_option("check (result, check, observed, attempts, seconds)")
@click.option(
    "--junit",
    "junit",
    type=click.Path(dir_okay=False, writable=True),
    metavar="PATH",
    help="Also write a JUnit XML report to PATH.",
)
@click.option(
    "--html",
    "html",
    type=click.Path(dir_okay=False, writable=True),
    metavar="PATH",
    help="Also write an HTML report to PATH: one self-contained file (topology, every check "
    "with its evidence, failed probes' packets, the rulesets) to open in a browser or attach "
    "to a PR.",
)
@click.option(
    "--pcap",
    "pcap_dir",
    type=click.Path(file_okay=False, writable=True),
    metavar="DIR",
    default=None,
    help="Keep what each failed probe check captured as DIR/CHECK-NAME.pcap: its `capture:` "
    "interface, else the client's interface towards the target.",
)
@click.option(
    "--trace",
    "trace_failed",
    is_flag=True,
    help="Send each failed probe check's probe once more, traced through every namespace "
    "(as `netlab trace`), and show its walk with the verdict: the rules it met, the NAT, "
    "where it died. Passing checks cost nothing more.",
)
@click.option("--failures-only", is_flag=True, help="List only the checks that failed (the counts still cover all).")
@click.option("--fail-fast", is_flag=True, help="Start no more checks once one has failed; the rest count as not run.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Tell every failed check in full: without it, three or more that failed the same way "
    "(differing only in addresses, ports, numbers) are told once, with their names.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Run the checks again whenever the lab file changes (and every --interval seconds if given), "
    "a one-line summary per run, until Ctrl-C. For a lab that is up (not with --up or --json).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=None,
    metavar="S",
    help="With --watch: also run the checks every S seconds.",
)
@_variant_option(
    "Check the lab of TARGET's variant NAME (LAB-NAME), with the variant's checks; with --up, build that lab."
)
@_hosts_option(
    "The lab is up over the hosts of inventory FILE (default $NETLAB_HOSTS, else the one `up --hosts` "
    "recorded for lab TARGET; with --up, built over them): each probe is sent from its client's host, "
    "each observation read and each --trace taken on its node's host (docs/multihost.md)."
)
def check(**options: Any) -> int:
    """Run the checks of lab TARGET (a lab name or its file) against the real kernel.

    Probes send real traffic between the lab's namespaces; route and rule checks ask
    the kernel. Each check passes (✓) or fails (✗) with the reason in words: what was
    expected, what was seen, and the evidence (probe outcome, conntrack entry, route,
    packets). Checks are read from the lab file each time, so you can add one and
    re-run without rebuilding.

    \b
    Examples:
      sudo netlab check labs/docker-bridge.yaml          # lab already up
      sudo netlab check --up labs/docker-bridge.yaml     # build, check, take down
      sudo netlab check docker-bridge --only outside --json
      sudo netlab check --up LAB.yaml --variant broken   # a variant's lab, LAB-broken
      sudo netlab check LAB-broken                       # the same, already up (`up --variant`)
      sudo netlab check flannel-vxlan --pcap /tmp/failed # failed checks' packets, for Wireshark
      sudo netlab check LAB-broken --trace               # failed checks' walks, rule by rule
      sudo netlab check flannel-scale --failures-only --fail-fast
      sudo netlab check LAB --watch                      # again on every save of the lab file

    Exit codes: 0 every check passed, 1 a check failed, 2 bad input (bad lab file, lab
    not up, no such check), 3 not root or a kernel feature is missing.
    """
    o = _CheckOptions(**options)
    if _output_format(o.as_json, o.fmt) == "json":
        o = replace(o, as_json=True)
    if not (o.build or o.watch):
        _start_agents_early(o.target, o.variant, o.hosts)
    _load_pipeline()
    if o.watch and (o.build or o.as_json):
        raise UsageError(
            "--watch re-runs the checks of a lab that is up: not with --up or --json (`netlab up` it first)"
        )
    if o.interval is not None and not o.watch:
        raise UsageError("--interval goes with --watch")
    for option, path in (("--junit", o.junit), ("--html", o.html)):
        _writable_or_refuse(option, path)
    hosts = o.hosts if o.hosts is not None else _recorded_inventory(o.target, o.variant)
    if hosts is not None:
        o = _over_hosts(o, hosts)
    if o.watch:
        from netlab.watch import lab_file_of

        return _watch_checks(o, o.target if o.hosts is not None else lab_file_of(o.target, o.variant))
    return _report_run(o, _run_checks(o, progress=True))


@dataclass(frozen=True)
class _CheckOptions:
    """`netlab check`'s options, by the names click passes them under."""

    target: str
    build: bool = False
    only: tuple[str, ...] = ()
    as_json: bool = False
    fmt: str | None = None
    junit: str | None = None
    html: str | None = None
    pcap_dir: str | None = None
    trace_failed: bool = False
    failures_only: bool = False
    fail_fast: bool = False
    verbose: bool = False
    watch: bool = False
    interval: float | None = None
    variant: str | None = None
    hosts: str | None = None


def _over_hosts(o: _CheckOptions, hosts: str) -> _CheckOptions:
    """The options of a check over hosts: TARGET becomes the lab's file (a name: the
    recorded one) and `hosts` the inventory."""
    from netlab.multihost.checks import over_hosts

    if o.build and not is_lab_file(o.target):
        raise UsageError(f"`--up` needs a lab file, got {o.target!r}")
    where = over_hosts(o.target, o.variant, hosts, "check")
    return replace(o, target=where.source, variant=where.variant, hosts=where.inventory)


def _run_checks(o: _CheckOptions, progress: bool) -> lifecycle.CheckRun:
    from netlab import lifecycle

    how = lifecycle.CheckSettings(
        keep_frames=o.pcap_dir is not None or o.html is not None, trace=o.trace_failed, fail_fast=o.fail_fast
    )
    if o.hosts is not None:
        return _run_checks_on_hosts(o, how, progress)
    driver = _driver()
    try:
        # One progress display at a time: the build's with --up, else the checks'.
        with _progress("building" if o.build else "checking") if progress else nullcontext() as tick:
            return lifecycle.check(
                o.target,
                driver,
                build=o.build,
                only=o.only,
                variant=o.variant,
                progress=tick if o.build else None,
                on_done=None if o.build else tick,
                how=how,
            )
    finally:
        driver.close()


def _run_checks_on_hosts(o: _CheckOptions, how: lifecycle.CheckSettings, progress: bool) -> lifecycle.CheckRun:
    from netlab.multihost import checks as multihost

    assert o.hosts is not None
    where = multihost.OverHosts(o.target, o.variant, o.hosts)
    with _progress("checking") if progress else nullcontext() as tick:
        return multihost.check(where, o.only, how, on_done=tick, build=o.build)


def _report_run(o: _CheckOptions, run: lifecycle.CheckRun) -> int:
    """The reports go to their files first, so a file that cannot be written is the one
    error the command reports (also as its one --json document)."""
    from netlab import report
    from netlab.rows import tsv

    if o.junit:
        _write_report("--junit", o.junit, report.to_junit(run.lab, run.verdicts, run.seconds, run.not_run))
    if o.html:
        html = report.to_html(o.target, o.variant, run.lab, run.verdicts, run.seconds, run.frames)
        _write_report("--html", o.html, html.encode())
    if o.pcap_dir is not None:
        from netlab.pcap import save_captures

        failed = {v.name: run.frames[v.name] for v in run.verdicts if not v.passed and v.name in run.frames}
        try:
            saved = save_captures(o.pcap_dir, failed)
        except OSError as e:  # the verdicts stand; only the files could not be written
            raise NetlabError(f"--pcap {o.pcap_dir}: cannot write the captures: {e.strerror or e}") from None
        for path in saved:
            err.print(f"capture of a failed check: {path}", markup=False)
    if o.as_json:
        fields = report.to_json(run.lab, run.verdicts, run.seconds, run.not_run)
        out.print(json_output.dumps("check", fields), markup=False)
    elif o.fmt == "tsv":
        _write_raw(tsv(_CHECK_COLUMNS, report.rows(run.verdicts, failures_only=o.failures_only)))
    elif not run.verdicts:
        out.print(f"lab {run.lab} has no checks; add a `checks:` section (see docs/lab-file.md)", markup=False)
    else:
        report.print_text(
            out,
            run.lab,
            run.verdicts,
            run.seconds,
            failures_only=o.failures_only,
            verbose=o.verbose,
            not_run=run.not_run,
        )
    return 0 if all(v.passed for v in run.verdicts) else EXIT_FAILED


_CHECK_COLUMNS = ("result", "check", "observed", "attempts", "seconds")


def _writable_or_refuse(option: str, path: str | None) -> None:
    """A report file that could not be written after the checks ran is refused before they run."""
    if path is None:
        return
    where = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(where):
        raise UsageError(f"{option} {path}: no directory {where} to write the report in")
    if not os.access(path if os.path.exists(path) else where, os.W_OK):
        raise UsageError(f"{option} {path}: not writable")


def _write_report(option: str, path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:  # the verdicts stand; only the report could not be written
        raise NetlabError(f"{option} {path}: cannot write the report: {e.strerror or e}") from None
    if option == "--html":
        err.print(f"report: {path}", markup=False)


def _watch_checks(o: _CheckOptions, path: str) -> int:
    """Run the checks, then again on every change of the lab file (or every `interval`),
    one summary line per run, until Ctrl-C (exit 130, nothing changed)."""
    from netlab import report
    from netlab.multihost.engine import HostsFailed
    from netlab.watch import FileWatch, changes

    last: lifecycle.CheckRun | None = None
    runs = 0
    err.print(f"watching {path}: the checks run again when it changes; Ctrl-C to stop", markup=False)
    try:
        for _ in changes(FileWatch(path), o.interval):
            runs += 1
            try:
                run = _run_checks(o, progress=False)
            except (LabError, UsageError, HostsFailed) as e:  # a file being edited: say why, keep watching
                err.print(f"{time.strftime('%H:%M:%S')} {e}", markup=False)
                continue
            if last is None:
                _report_run(o, run)
            else:
                out.print(report.watch_line(run.lab, last.verdicts, run.verdicts, run.seconds), markup=False)
            last = run
    except interrupts.Signalled as s:
        err.print(f"netlab: check --watch ended by {s.name} after {plural(runs, 'run')}", markup=False)
        return 128 + s.signum
    except Interrupted as e:
        err.print(f"netlab: {e}", markup=False)
        return e.exit_code
    return 0  # pragma: no cover - changes() never ends


@cli.command()
@click.argument("target", shell_complete=completion.complete_lab)
@click.option(
    "--html",
    "html",
    type=click.Path(dir_okay=False, writable=True),
    metavar="PATH",
    required=True,
    help="Where to write the report.",
)
@click.option("--up", "build", is_flag=True, help="Build the lab from TARGET (a file) first, as `check --up`.")
@_only_option("Only the checks whose name contains WORDS.")
@_variant_option("The lab of TARGET's variant NAME (LAB-NAME), as `check --variant`.")
@click.pass_context
def report(ctx: click.Context, target: str, html: str, build: bool, only: tuple[str, ...], variant: str | None) -> int:
    """Run the checks of lab TARGET and write the HTML report: the same as
    `netlab check TARGET --trace --html PATH` (the verdicts are printed too; same exit codes).

    One self-contained file, no network needed to view it: a summary to paste into a
    pull request (lab, passed/failed, time, kernel), the topology, every check with its
    verdict, reasons and evidence (failed ones open, with the packets their capture
    saw and the walk of their traced probe), and each node's rulesets, folded.

    \b
    Examples:
      sudo netlab report docker-bridge --html report.html
      sudo netlab report --up labs/lvs-nat.yaml --variant dnat-only --html lvs.html
    """
    result: int = ctx.invoke(
        check, target=target, build=build, only=only, html=html, trace_failed=True, variant=variant
    )
    return result


@cli.command()
@click.argument("lab", shell_complete=completion.complete_lab)
@click.argument("where", metavar="NODE:IF", shell_complete=completion.complete_node_if)
@click.argument("expression", nargs=-1, metavar="[FILTER]...")
@click.option(
    "-w",
    "--write",
    "write",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE.pcap",
    help="Also write the frames to a pcap file (Wireshark, tcpdump -r).",
)
@click.option("-c", "--count", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N frames.")
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S", help="Stop after S seconds."
)
@_variant_option("With LAB a file or a lab name: the lab of its variant NAME (LAB-NAME).")
def capture(
    lab: str,
    where: str,
    expression: tuple[str, ...],
    write: str | None,
    count: int | None,
    duration: float | None,
    variant: str | None,
) -> int:
    """Watch the frames crossing interface IF of NODE in lab LAB (a name or its file).

    One line per frame, decoded as the checks' evidence is (addresses, ports, ICMP,
    VXLAN with its VNI and the inner flow); with -w, the frames also go to a pcap file.
    FILTER is a pcap-filter expression, as tcpdump takes it. Runs until --count frames,
    --duration seconds, or Ctrl-C (exit 130; the file is complete).

    \b
    A bridge does not show the frames it switches between two of its ports: capture on
    the port (the host end of the pod's veth, e.g. node1:vethpod2), not on cni0.

    \b
    FILTER does not follow a flow through NAT: it is compiled to BPF and tests the
    headers of each frame as it crosses IF, with no flow to follow. Beyond a node that
    NATs, the same flow carries other addresses or ports (a masquerade, fully-random
    ones, a DNAT to a backend), so write FILTER for what crosses IF (e.g. the backend's
    address and port). A probe check's `capture:` does follow its probe through NAT,
    by the flow's conntrack entries in the nodes that rewrote it.

    \b
    Examples:
      sudo netlab capture flannel-vxlan node1:eth0 udp port 8472     # the VXLAN underlay
      sudo netlab capture flannel-vxlan pod1:eth0 -w pod1.pcap --count 20
      sudo netlab capture docker-bridge host:docker0 --duration 5 tcp port 80
      tcpdump -nr pod1.pcap ; wireshark pod1.pcap

    Exit codes: 0 done, 2 bad NODE:IF or filter, 3 not root, 130 ended by Ctrl-C.
    """
    from contextlib import nullcontext

    _load_pipeline("netlab.context")
    from netlab import context
    from netlab.observations import CaptureError
    from netlab.pcap import FilterError, compile_filter
    from netlab.probes.live import capture_live

    node, sep, ifname = where.partition(":")
    if not sep or not node or not ifname:
        raise UsageError(f"{where!r} is not NODE:IF (e.g. node1:eth0)")
    require_root("capture")
    ctx = context.lab_context(lab, variant)
    if node not in ctx.nodes:
        raise UsageError(f"lab {ctx.lab.name} has no node {node!r} (nodes: {', '.join(ctx.nodes)})")
    names = [i.name for i in ctx.topo.of_node(node)]
    if ifname not in names and ifname != "lo":
        raise UsageError(
            f"node {node} of lab {ctx.lab.name} has no interface {ifname!r} "
            f"(its interfaces: {', '.join(dict.fromkeys([*names, 'lo']))})"
        )
    try:
        bpf = compile_filter(" ".join(expression)) if expression else None
    except FilterError as e:
        raise UsageError(f"bad filter {' '.join(expression)!r}: {e}") from None
    with open(write, "wb") if write else nullcontext() as pcap:
        try:
            result = capture_live(
                ctx.ns(node),
                ifname,
                on_line=lambda line: out.print(line, markup=False),
                pcap=pcap,
                count=count,
                duration=duration,
                bpf=bpf,
                vxlan_ports=ctx.vxlan_ports(),
                on_start=lambda: err.print(f"capturing on {where} of lab {ctx.lab.name}; Ctrl-C to stop", markup=False),
            )
        except CaptureError as e:
            if write:
                os.unlink(write)  # nothing was captured: no file that looks like a capture
            raise UsageError(str(e)) from None
    dropped = f", {result.dropped} dropped by the kernel (buffer full)" if result.dropped else ""
    err.print(
        f"{plural(result.frames, 'frame')} on {where}{dropped}" + (f", written to {write}" if write else ""),
        markup=False,
    )
    return 128 + result.signal if result.signal is not None else 0


@cli.command()
@click.argument("lab", shell_complete=completion.complete_lab)
@click.option(
    "--from",
    "node",
    required=True,
    metavar="NODE",
    shell_complete=completion.complete_node,
    help="The node that sends the probe.",
)
@click.option(
    "--to",
    "to",
    required=True,
    metavar="TARGET",
    shell_complete=completion.complete_node,
    help="A node, an address, NODE:PORT or ADDRESS:PORT (as a check's `to:`).",
)
@click.option(
    "--proto",
    type=click.Choice(["tcp", "udp", "icmp"]),
    default=None,
    help="The probe's protocol (default: tcp with a port, else icmp).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=None, metavar="N", help="The destination port.")
@click.option(
    "--count",
    type=click.IntRange(1, 10),
    default=1,
    show_default=True,
    metavar="N",
    help="Probes to send (each its own source port).",
)
@click.option("--src", default=None, metavar="ADDR", help="Send from this address of the node (as a check's `src:`).")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON (nothing else on stdout).")
@_variant_option("With LAB a file or a lab name: the lab of its variant NAME (LAB-NAME).")
@_hosts_option(
    "LAB is up over the hosts of inventory FILE (default $NETLAB_HOSTS, else the one `up --hosts` "
    "recorded for LAB): each namespace is traced on its host, the probe sent from NODE's, and the "
    "walk follows it over the tunnels between them (docs/multihost.md)."
)
def trace(**options: Any) -> int:
    """Follow one probe through every namespace of lab LAB with nftables tracing.

    Each namespace gets temporary tables (`inet netlab-trace-…`, and `bridge
    netlab-trace-…` for what a bridge does) that mark the flow's packets, both directions,
    and a listener for the kernel's trace events; the probe is sent, and the walk is
    printed namespace by namespace: every rule the packet met with its verdict
    (iptables-nft rules too, as their chains), each NAT where it happens (with its
    conntrack entry's original and reply tuples; the flow is followed through a DNAT and
    a fully-random SNAT at once), each bridge's ports in and out (or its flood), each
    VXLAN tunnel it entered (device, VNI, and the outer packet's addresses and UDP ports,
    traced over the underlay) and left, each IPVS director's scheduling decision
    (service, real server, forwarding: from its connection table, as IPVS runs in hooks
    nftables tracing does not see), and where it died — a rule's drop or a chain's
    policy. When no rule dropped it, the kernel's own drop reason (rp_filter, no route,
    …, from its skb:kfree_skb tracepoint read through a private tracefs) names the
    namespace and interface where it died, and a next hop that never answered ARP/NDP
    (the neighbour table where the probe was last seen going out) is named as
    NEIGH_FAILED; without the tracepoint, the walk says what tracing cannot see
    (routing, rp_filter, neighbours). Either way it shows the route decision of the last
    namespace that saw it. The tables (and the tracing instance) are removed afterwards,
    also on Ctrl-C.

    \b
    Examples:
      sudo netlab trace nft --from client --to server:8080
      sudo netlab trace nft --from client --to 203.0.113.10 --port 80 --json
      sudo netlab trace flannel-vxlan --from pod1 --to pod4 --proto icmp

    Exit codes: 0 the probe got its answer, 1 it did not, 2 bad input (lab not up, unknown
    node or target), 3 not root.
    """
    o = _TraceOptions(**options)
    _start_agents_early(o.lab, o.variant, o.hosts)
    _load_pipeline("netlab.context")
    from netlab import context

    hosts = o.hosts if o.hosts is not None else _recorded_inventory(o.lab, o.variant)
    if hosts is None:
        require_root("trace")
        return _trace(context.lab_context(o.lab, o.variant), o)
    from netlab.multihost.checks import lab_over_hosts, over_hosts
    from netlab.multihost.lifecycle import load_split

    where = over_hosts(o.lab, o.variant, hosts, "trace")
    with lab_over_hosts(where, *load_split(where.source, where.variant, where.inventory)) as ctx:
        return _trace(ctx, o)


@dataclass(frozen=True)
class _TraceOptions:
    """`netlab trace`'s options, by the names click passes them under."""

    lab: str
    node: str
    to: str
    proto: str | None = None
    port: int | None = None
    count: int = 1
    src: str | None = None
    as_json: bool = False
    variant: str | None = None
    hosts: str | None = None


def _trace(ctx: LabContext, o: _TraceOptions) -> int:
    """`netlab trace` in the lab of ctx (on this machine or over hosts)."""
    from netlab.lab.targets import TargetError, is_address, node_addresses, split_target
    from netlab.probes.trace import run_trace, text_lines, to_json

    node, to, proto, port, src = o.node, o.to, o.proto, o.port, o.src
    if node not in ctx.nodes:
        raise UsageError(f"lab {ctx.lab.name} has no node {node!r} (nodes: {', '.join(ctx.nodes)})")
    try:
        host, to_port = split_target(to)
    except TargetError as e:
        raise UsageError(f"--to {e}") from None
    if to_port is not None and port is not None and to_port != port:
        raise UsageError(f"--to {to} and --port {port} name different ports; give the port once")
    port = port if port is not None else to_port
    if is_address(host):
        dst = host
    elif host in ctx.nodes:
        addrs = node_addresses(ctx.topo, host)
        if not addrs:
            raise UsageError(f"node {host} has no address to trace to; give an address")
        dst = addrs[0]
    else:
        raise UsageError(
            f"--to {host!r} is neither an address nor a node of lab {ctx.lab.name} (nodes: {', '.join(ctx.nodes)})"
        )
    proto = proto or ("tcp" if port is not None else "icmp")
    if proto != "icmp" and port is None:
        raise UsageError(f"a {proto} trace needs a port: --port N or --to {to}:PORT")
    if src is not None and src not in node_addresses(ctx.topo, node):
        raise UsageError(f"--src {src} is not an address of {node} ({', '.join(node_addresses(ctx.topo, node))})")
    result = run_trace(ctx, node, dst, proto, port if proto != "icmp" else None, count=o.count, src=src)
    if o.as_json:
        out.print(json_output.dumps("trace", to_json(result)), markup=False)
    else:
        for line in text_lines(result):
            out.print(line, markup=False)  # the console highlights nothing: a pipe gets plain writes, no rich
    return 0 if result.ok else EXIT_FAILED


_IMPAIR_EPILOG = """\b
Examples:
  sudo netlab impair flannel-vxlan node1:eth0 --delay 50ms --jitter 5ms --loss 2%
  sudo netlab impair flannel-vxlan node1:eth0 --rate 1mbit --limit 50
  sudo netlab check flannel-vxlan                  # the checks, under the impairment
  sudo netlab impair flannel-vxlan node1:eth0 --clear
"""


@cli.command(epilog=_IMPAIR_EPILOG)
@click.argument("lab", shell_complete=completion.complete_lab)
@click.argument("where", metavar="NODE:IF", shell_complete=completion.complete_node_if)
@click.option("--delay", metavar="TIME", help="Added to every packet IF sends: 100ms, 1.5s, 250us.")
@click.option("--jitter", metavar="TIME", help="The delay varies by up to this much either way (needs --delay).")
@click.option(
    "--correlation", metavar="PCT", help="Of each delay's jitter with the previous one: 25% (needs --jitter)."
)
@click.option(
    "--distribution",
    type=click.Choice(["uniform", "normal", "pareto", "paretonormal"]),
    help="Of the jitter (needs --jitter; default uniform).",
)
@click.option("--loss", metavar="PCT", help="Share of packets dropped: 5%, 0.1%.")
@click.option("--duplicate", metavar="PCT", help="Share of packets sent twice.")
@click.option("--corrupt", metavar="PCT", help="Share of packets with one random bit flipped.")
@click.option("--reorder", metavar="PCT", help="Share sent at once, ahead of the delayed ones (needs --delay).")
@click.option("--rate", metavar="RATE", help="The link's speed: 10mbit, 500kbit, 1gbit (bps: bytes per second).")
@click.option("--limit", type=click.IntRange(1, 2**32 - 1), metavar="N", help="Packets queued at most (1000).")
@click.option("--clear", is_flag=True, help="Remove the impairment: IF's own default qdisc again.")
@click.option("--json", "as_json", is_flag=True, help="Print the link end before and after as JSON.")
@_variant_option("With LAB a file or a lab name: the lab of its variant NAME (LAB-NAME).")
def impair(lab: str, where: str, clear: bool, as_json: bool, variant: str | None, **options: str | int | None) -> int:
    """Impair what interface IF of NODE sends, in lab LAB that is up (a name or its file).

    Sets IF's root qdisc to netem with these impairments (`tc qdisc replace dev IF root
    netem …`), replacing any it had: give every impairment you want each time; --clear
    removes it. Only what IF sends is impaired: for both directions, impair both ends (a
    veth's other end is the NODE:IF of its peer). Values are written as a link's `netem:`
    in the lab file takes them, and checked the same way. The change is the kernel's
    only: `netlab status` shows it, the lab file is not changed, and rebuilding the lab
    gives it the file's impairments again. Needs a kernel with sch_netem (else exit 3,
    saying how to get one).

    Exit codes: 0 done, 1 the kernel refused, 2 bad options (or lab not up, unknown
    NODE:IF), 3 not root or no netem.
    """
    _load_pipeline()
    from netlab import impair as impairing

    if clear == any(v is not None for v in options.values()):
        raise UsageError("give impairments (--delay, --loss, …) or --clear, not both and not neither")
    netem = None if clear else impairing.netem_from_options(options)
    driver = _driver()
    try:
        changed = impairing.impair(impairing.find_end(lab, where, driver, variant), netem, driver)
    finally:
        driver.close()
    if as_json:
        out.print(json_output.dumps("impair", _changed_json(changed, "netem")), markup=False)
        return 0
    now = f"netem {changed.after.netem}" if changed.after.netem else "no impairment"
    was = f"netem {changed.before.netem}" if changed.before.netem else "none"
    out.print(f"{changed.end}: {now} (before: {was})", markup=False)
    return 0


@cli.command("link")
@click.argument("lab", shell_complete=completion.complete_lab)
@click.argument("where", metavar="NODE:IF", shell_complete=completion.complete_node_if)
@click.argument("state", type=click.Choice(["down", "up"]))
@click.option("--json", "as_json", is_flag=True, help="Print the link end before and after as JSON.")
@_variant_option("With LAB a file or a lab name: the lab of its variant NAME (LAB-NAME).")
def link_state(lab: str, where: str, state: str, as_json: bool, variant: str | None) -> int:
    """Set interface IF of NODE in lab LAB (a name or its file) down or up: flap a link.

    `ip link set IF down|up` in the node's namespace. A veth's other end then has no
    carrier: what a pulled cable or a dead peer looks like to the routes and probes
    behind it. Down, the kernel drops every route of the node through IF; up gives back
    its addresses' own routes, and netlab puts the node's routes of the lab file back
    too. The change is the kernel's only; `netlab status` shows it.

    \b
    Examples:
      sudo netlab link flannel-vxlan node2:eth0 down    # node2 off the underlay
      sudo netlab check flannel-vxlan                   # what breaks, and how
      sudo netlab link flannel-vxlan node2:eth0 up

    Exit codes: 0 done, 1 the kernel refused, 2 lab not up or unknown NODE:IF, 3 not root.
    """
    _load_pipeline()
    from netlab import impair as impairing

    driver = _driver()
    try:
        changed = impairing.set_link(impairing.find_end(lab, where, driver, variant), state == "up", driver)
    finally:
        driver.close()
    if as_json:
        out.print(json_output.dumps("link", _changed_json(changed, "up")), markup=False)
        return 0
    after = changed.after
    carrier = f" (the kernel says {after.oper}: no carrier)" if after.up and after.oper not in ("up", "unknown") else ""
    routes = f"; {plural(changed.routes, 'route')} of the lab file put back" if changed.routes else ""
    out.print(f"{changed.end}: {state}{carrier}{routes}", markup=False)
    return 0


def _changed_json(changed: Changed, key: str) -> dict[str, Any]:
    """A link end before and after a change: the link's fields as `status --json` gives them."""
    end = changed.end
    return {
        "lab": end.lab,
        "node": end.node,
        "interface": end.ifname,
        "before": asdict(changed.before),
        "after": asdict(changed.after),
        "changed": getattr(changed.before, key) != getattr(changed.after, key),
        "routes": changed.routes,
    }


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("lab", shell_complete=completion.complete_lab)
@click.argument("node", required=False, shell_complete=completion.complete_node)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--all", "all_nodes", is_flag=True, help="Run COMMAND on every node of LAB (NODE is then not given).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print each node\'s exit status and output as JSON: {"schema": "netlab/exec/v1", …} (docs/json.md).',
)
@_hosts_option(
    "LAB is up over the hosts of inventory FILE (default $NETLAB_HOSTS, else the one `up --hosts` "
    "recorded for LAB): COMMAND (or the shell) runs on NODE's host, through `ssh -t` on a terminal; "
    "on several nodes, each host runs its share at once, and --json gives each node its host."
)
def exec(
    lab: str, node: str | None, command: tuple[str, ...], all_nodes: bool, as_json: bool, hosts: str | None
) -> int:
    """Run COMMAND inside NODE's namespace of LAB, or open a shell there; or run COMMAND
    on several nodes (NODE a GLOB such as 'pod-*', or --all).

    \b
    Without COMMAND: your $SHELL inside the node, its prompt prefixed with [LAB.NODE]
    (your rc files are read as usual; $NETLAB_LAB and $NETLAB_NODE are set). exit leaves it.
    With COMMAND on one node: its output as it is, and its exit status. A command that
    does not exist exits 127, one that cannot be executed 126, as in a shell.
    On several nodes: the commands run side by side, each line of output prefixed with
    its node; a last line (on stderr) sums up the exit statuses; the exit status is 0
    when every node's was, else the highest of them.

    \b
    Examples:
      sudo netlab exec docker-bridge c1                    # a shell in c1
      sudo netlab exec docker-bridge c1 -- ip route
      sudo netlab exec flannel-vxlan 'pod*' -- ip -br addr # every pod
      sudo netlab exec flannel-vxlan --all --json -- ip -j route
    Put COMMAND after `--`, so its options are not taken for netlab's.
    """
    _load_pipeline()
    from netlab import nodeexec
    from netlab.state import read_state

    if all_nodes and node is not None:  # `exec LAB --all -- CMD…`: what click took for NODE starts the command
        command, node = (node, *command), None
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not all_nodes and node is None:
        raise UsageError("give a NODE (or a GLOB of nodes, or --all), e.g. `netlab exec LAB NODE -- CMD`")
    hosts = hosts if hosts is not None else _recorded_inventory(lab, None)
    if hosts is not None:
        if not (all_nodes or as_json or nodeexec.is_glob(str(node))):
            return _exec_on_host(lab, str(node), argv, hosts)
        if not argv:
            raise UsageError("give the COMMAND to run on each node, after `--`")
        return _exec_on_hosts(lab, None if all_nodes else str(node), argv, as_json, hosts)
    require_root("exec")
    from netlab.teardown import resolve_lab_name

    lab = resolve_lab_name(lab)
    state = read_state(lab)
    chosen = nodeexec.select_nodes(lab, nodeexec.lab_nodes(lab, state.nodes if state else None), node)
    several = all_nodes or nodeexec.is_glob(str(node))
    if not argv:
        if several or as_json:
            raise UsageError("give the COMMAND to run on each node, after `--`")
        return _exec_shell(lab, str(node), chosen[str(node)])
    nodeexec.check_runnable(argv[0])
    if not several and not as_json:
        _exec_replacing(chosen[str(node)], argv, {}, None)
    return _exec_on_nodes(lab, chosen, argv, as_json)


def _exec_on_host(target: str, node: str, argv: list[str], hosts: str) -> NoReturn:
    """This process becomes the ssh that runs `netlab exec LAB NODE -- ARGV` on NODE's host
    (a terminal when this has one: the shell, or a command that wants one, works there)."""
    from netlab.multihost.checks import over_hosts
    from netlab.multihost.lifecycle import load_split
    from netlab.multihost.ssh import as_root, ssh_argv

    where = over_hosts(target, None, hosts, "exec")
    inventory, split = load_split(where.source, where.variant, where.inventory)
    if node not in split.lab.nodes:
        raise UsageError(f"lab {split.lab.name} has no node {node!r}; its nodes: {', '.join(split.lab.nodes)}")
    host = inventory.host(split.placement.of_node[node])
    remote = as_root([host.netlab, "exec", split.lab.name, node, *(["--", *argv] if argv else [])])
    tty = ["-t"] if sys.stdin.isatty() or not argv else ["-T"]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp("ssh", ssh_argv(host, remote, tty))
    except OSError as e:
        raise NetlabError(f"cannot run ssh: {e.strerror}") from None


def _exec_on_hosts(target: str, pattern: str | None, argv: list[str], as_json: bool, hosts: str) -> int:
    """COMMAND on several nodes of a lab over hosts (or on one, for --json): each host runs
    its share, all at once; the output comes when every host has answered."""
    from netlab import nodeexec
    from netlab.multihost.checks import over_hosts
    from netlab.multihost.execs import run_on_hosts

    ran = run_on_hosts(over_hosts(target, None, hosts, "exec"), pattern, argv)
    if as_json:
        nodes = [{**asdict(r), "host": ran.host_of[r.node]} for r in ran.results]
        out.print(json_output.dumps("exec", {"lab": ran.lab, "command": argv, "nodes": nodes}), markup=False)
        return nodeexec.exit_status(ran.results)
    width = max(len(r.node) for r in ran.results)
    for r in ran.results:
        for stream, text in ((sys.stdout, r.stdout), (sys.stderr, r.stderr)):
            for line in text.splitlines():
                stream.write(f"{r.node:<{width}} | {line}\n")
    sys.stdout.flush()
    err.print(nodeexec.summary(ran.lab, ran.results), markup=False)
    return nodeexec.exit_status(ran.results)


def _exec_shell(lab: str, node: str, ns: str) -> int:
    from netlab import nodeexec

    launch = nodeexec.shell_launch(nodeexec.user_shell(), lab, node)
    if sys.stdin.isatty():
        err.print(f"a shell in node {node} of lab {lab} ({ns}); exit leaves it", markup=False, style="dim")
    _exec_replacing(ns, launch.argv, launch.env, launch.pass_fd)
    return 0  # not reached


def _exec_replacing(ns: str, argv: list[str], env: dict[str, str], keep_fd: int | None) -> NoReturn:
    """This process becomes `ip netns exec NS ARGV…` (its exit status is the command's)."""
    from netlab import nodeexec

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe("ip", nodeexec.ip_netns_exec(ns, argv), {**os.environ, **env})
    except OSError as e:
        raise NetlabError(f"cannot run ip netns exec: {e.strerror}") from None


def _exec_on_nodes(lab: str, nodes: dict[str, str], argv: list[str], as_json: bool) -> int:
    from netlab import nodeexec

    width = max(map(len, nodes))

    def line(node: str, stream: str, text: str) -> None:
        where = sys.stdout if stream == "stdout" else sys.stderr
        where.write(f"{node:<{width}} | {text}\n")
        where.flush()

    results = nodeexec.run_on_nodes(nodes, argv, None if as_json else line)
    if as_json:
        out.print(
            json_output.dumps("exec", {"lab": lab, "command": argv, "nodes": [asdict(r) for r in results]}),
            markup=False,
        )
    else:
        err.print(nodeexec.summary(lab, results), markup=False)
    return nodeexec.exit_status(results)


@cli.command()
@click.argument("lab", shell_complete=completion.complete_lab)
@click.argument(
    "which", required=False, metavar="[NODE|exec|responders]", shell_complete=completion.complete_log_source
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are written, until Ctrl-C.")
def logs(lab: str, which: str | None, follow: bool) -> int:
    """Show what lab LAB's processes said: the output of its `exec:` commands (kept when
    `up` ran them; `|` stdout, `!` stderr, then the exit status) and its responders' log
    (a line per connection they answered, and how they ended).

    \b
    With NODE: only that node's exec output and the connections it served; with exec or
    responders: only that log.

    \b
    Examples:
      sudo netlab logs docker-bridge
      sudo netlab logs docker-bridge c2 --follow      # connections to c2 as they come
      sudo netlab logs flannel-vxlan exec
    """
    _load_pipeline()
    from netlab.logs import SOURCES, Tail, about, log_paths
    from netlab.logs import follow as following
    from netlab.state import read_state

    require_root("logs", reads_only=True)
    from netlab.teardown import resolve_lab_name

    name = resolve_lab_name(lab)
    state = read_state(name)
    if state is None:
        raise UsageError(f"lab {name} is not up (it has no state); its logs go with it at `netlab down`")
    node = which if which is not None and which in state.nodes else None
    if which is not None and node is None and which not in SOURCES:
        raise UsageError(f"lab {name} has no node {which!r} (nodes: {', '.join(state.nodes)}; or: exec, responders)")
    tail = Tail(log_paths(name, None if node else which))

    def show(lines: list[tuple[str, str]]) -> None:
        _write_raw("".join(f"{line}\n" for source, line in lines if node is None or about(line, source, node)))

    if not follow:
        shown = tail.read()
        show(shown)
        if not shown:
            err.print(f"lab {name} has no {which or 'exec or responder'} output yet", markup=False)
        return 0
    try:
        for lines in following(tail):
            show(lines)
    except interrupts.Signalled as s:
        return 128 + s.signum
    err.print(f"lab {name} was taken down", markup=False)
    return 0


@cli.command()
@click.option(
    "--idle",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="End after this long without a command (default 0: run until Ctrl-C or SIGTERM).",
)
def serve(idle: float) -> int:
    """Keep netlab's pipeline imported in a resident process, so commands start at once.

    Every command that loads a lab spends ~0.25 s of CPU importing pydantic and the lab's
    models before it reads the file. While `netlab serve` runs, up, down, check, status,
    validate, render, trace and graph run as root hand themselves to it: it forks a child
    that already has all of that loaded, which runs the command with the caller's
    terminal, directory, environment and limits, and the caller forwards Ctrl-C and
    SIGTERM to it and exits with its code. A caller in other namespaces, another user's,
    or one running other code runs the command itself, as when no server runs;
    NETLAB_SERVER=0 makes a command never ask. Once netlab's own files changed (an
    edited checkout), the next command runs itself and the server ends. It logs a line
    per command on stderr.

    \b
    Examples:
      sudo netlab serve &                        # then as usual:
      sudo netlab up labs/docker-bridge.yaml     # built by a child of the server
      sudo netlab serve --idle 600               # ends after 10 idle minutes
    """
    from netlab import server

    require_root("serve")
    _load_pipeline()
    for module in _SERVER_PRELOADS:
        _load_pipeline(module)
    runner = server.Server(_served_command, sys.stderr, idle)
    interrupts.started()  # from here SIGINT and SIGTERM end the loop, and the socket goes
    try:
        runner.serve()
    except server.ServerRunning as e:
        raise NetlabError(str(e)) from None
    except interrupts.Signalled as s:  # its commands' children run on, in sessions of their own
        err.print(f"netlab serve: ended by {s.name}", markup=False)
        return 128 + s.signum
    return 0


# What the commands a server runs import beyond the build (netlab.lifecycle).
_SERVER_PRELOADS = ("netlab.context", "netlab.status", "netlab.probes.checks", "netlab.kernel.netlink")


def _served_command(argv: list[str], prog: str) -> int:
    """Run one command in a server's child, as `main` runs it (its exit code)."""
    from netlab import timing

    timing.ENABLED = bool(os.environ.get("NETLAB_TIMING"))  # the client's environment, not the server's
    return _command(argv, prog)


@cli.command("host-agent", hidden=True)
def host_agent() -> int:
    """A check across hosts, this host's side: answer the coordinator's calls (one JSON
    document a line, netlab.multihost.calls) on stdin until it closes. Run by the
    coordinator over ssh, as root; not for people."""
    _load_pipeline("netlab.multihost.agent")  # what it answers with: not the lab's model, not the build
    from netlab.multihost.agent import serve

    require_root("host-agent", reads_only=True)
    serve(sys.stdin, sys.stdout)
    return 0


@cli.command("completion")
@click.argument("shell", type=click.Choice(completion.SHELLS))
def completion_command(shell: str) -> int:
    """Print the script that makes SHELL complete netlab's commands, options, lab names
    (labs that are up, and lab files), node names after a lab, variant names and check
    names (--only) from the lab file.

    \b
    Examples:
      bash:  eval "$(netlab completion bash)"   in ~/.bashrc
      zsh:   eval "$(netlab completion zsh)"    in ~/.zshrc (after compinit)
      fish:  netlab completion fish > ~/.config/fish/completions/netlab.fish
    `sudo netlab <TAB>` completes too (bash-completion's sudo hands the line to netlab).
    """
    out.print(completion.script(cli, shell), markup=False, end="")
    return 0


@cli.group()
def vm() -> None:
    """Run commands under a kernel with everything (IPVS, VRF, netem, dummy).

    Boots Debian's stock kernel (linux-image-amd64) with virtme-ng over this machine's
    own filesystem, so the same checkout and venv run inside. For kernels that lack
    those modules (WSL, cloud and microVM kernels). `scripts/setup` installs what it needs.

    \b
    Examples:
      sudo netlab vm run -- netlab check --up labs/ipvs-smoke.yaml
      sudo netlab vm run --results out -- .venv/bin/pytest tests/vm --junitxml out/vm.xml
    """


@vm.command("run", context_settings={"ignore_unknown_options": True})
@click.option(
    "--results",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Directory shared writable with the VM (default: a new one under /tmp, printed).",
)
@click.option(
    "--rwdir",
    "rwdirs",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Another host directory the VM may write (repeatable).",
)
@click.option(
    "--kernel",
    default=None,
    metavar="PATH",
    help="Kernel image to boot (default: $NETLAB_VM_KERNEL, else the newest /boot/vmlinuz-*).",
)
@click.option(
    "--modules",
    default=None,
    metavar="M1,M2",
    help="Kernel modules to load first (default: ip_vs and its schedulers, vrf, sch_netem, dummy, …).",
)
@click.option(
    "--kvm/--no-kvm",
    default=None,
    help="Use KVM or emulate (default: KVM when this machine can; $NETLAB_VM_KVM=0/1 forces).",
)
@click.option("--memory", default="2G", show_default=True, help="Guest memory.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="End the command if it runs longer, after showing where every guest process waits "
    "(kernel stacks, blocked tasks, a Python command's own stacks); exit 124. A guest too "
    "wedged to end it is stopped by the host a few minutes later.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def vm_run(
    results: str | None,
    rwdirs: tuple[str, ...],
    kernel: str | None,
    modules: str | None,
    kvm: bool | None,
    memory: str,
    timeout: float | None,
    command: tuple[str, ...],
) -> int:
    """Boot the VM, run COMMAND inside as root (in the current directory), pass its exit
    code through. The VM's console output and the command's go to this terminal.

    \b
    Examples:
      netlab vm run -- netlab doctor
      netlab vm run --results out -- .venv/bin/pytest tests/vm --junitxml out/vm.xml
      netlab vm run -- netlab check --up labs/ipvs-smoke.yaml

    Emulated (no KVM; the first line says why), boot and power-off take about a minute
    on a shared 2-core machine, and the guest gets NETLAB_SLOWNESS=10 so netlab's own
    waits scale. Exit code 125: the VM never reported the command's exit code (it did
    not boot, or crashed); 124: it ran past --timeout.
    """
    import tempfile
    from pathlib import Path

    from netlab import vm as vmmod

    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        raise UsageError("give a command to run in the VM, e.g. `netlab vm run -- netlab doctor`")
    out_dir = Path(results).resolve() if results else Path(tempfile.mkdtemp(prefix="netlab-vm-"))
    use_kvm, why = vmmod.kvm_choice() if kvm is None else (kvm, "--kvm" if kvm else "--no-kvm")
    run = vmmod.VmRun(
        argv=argv,
        results=out_dir,
        kernel=kernel or vmmod.find_kernel(),
        kvm=use_kvm,
        modules=tuple(m for m in modules.split(",") if m) if modules is not None else vmmod.DEFAULT_MODULES,
        memory=memory,
        rwdirs=tuple(str(Path(d).resolve()) for d in rwdirs),
        timeout=timeout,
    )
    how = "KVM" if run.kvm else "emulated (no KVM: ~10× slower, netlab's waits scale)"
    err.print(f"netlab vm: booting {run.kernel}, {how}: {why}; results in {out_dir}", markup=False)
    return vmmod.run_in_vm(run)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_format_option("feature or tool (kind, name, ok, detail, hint)")
@click.option(
    "--hosts",
    metavar="FILE",
    default=None,
    help="Check every host of inventory FILE instead: reachable, root, netlab's version, kernel "
    "features, and the tunnels' UDP port between each pair (a ping through a throwaway VXLAN pair); "
    "--json gives a row per finding (`findings`: where, hosts, check, ok, detail).",
)
def doctor(as_json: bool, fmt: str | None, hosts: str | None) -> int:
    """Check what this kernel and machine can do: netns, veth, bridge, dummy, vxlan, vrf,
    ipvs, nftables, conntrack, ipset, netem, the tunnels (ipip, gre, gretap, ip6tnl, ip6gre,
    geneve), vlan, bridge VLAN filtering, newer rule selectors, and the tools labs use.

    Each missing piece comes with how to get it. Exits 3 if a kernel feature is missing.
    With --hosts: exits 1 if a host cannot take part in a lab, or a pair of hosts cannot
    reach each other on the tunnels' port; else 3 if a host's kernel lacks a feature.

    \b
    Examples:
      sudo netlab doctor
      sudo netlab doctor --format tsv | awk -F'\t' '$3 == "no" {print $2}'   # what is missing
      sudo netlab vm run -- netlab doctor     # the same under a kernel with everything
      netlab doctor --hosts hosts.yaml        # every host of an inventory, and the tunnels between them
    """
    from rich.table import Table

    _load_pipeline()
    fmt = _output_format(as_json, fmt)
    if hosts is not None:
        return _doctor_hosts(hosts, fmt)
    from netlab.kernel.features import probe_features, probe_tools

    require_root("doctor")
    features, tools = probe_features(), probe_tools()
    if fmt == "tsv":
        from netlab.rows import tsv

        rows = [["feature", f.name, "yes" if f.ok else "no", f.detail, "" if f.ok else f.hint] for f in features]
        rows += [["tool", t.name, "yes" if t.ok else "no", t.path, "" if t.ok else t.hint] for t in tools]
        _write_raw(tsv(("kind", "name", "ok", "detail", "hint"), rows))
    elif fmt == "json":
        out.print(
            json_output.dumps(
                "doctor", {"features": [asdict(f) for f in features], "tools": [asdict(t) for t in tools]}
            ),
            markup=False,
        )
    else:
        table = Table(show_edge=False, title="kernel features", title_justify="left")
        for col in ("feature", "", "detail / how to get it"):
            table.add_column(col)
        hint = "\n→ " if out.is_terminal else " → "  # into a pipe, one line per feature
        for f in features:
            mark = "[green]✓[/]" if f.ok else "[red]✗[/]"
            table.add_row(f.name, mark, f.detail if f.ok else f"{f.detail}{hint}{f.hint}")
        out.print(table)
        tt = Table(show_edge=False, title="tools", title_justify="left")
        for col in ("tool", "", "path / how to get it"):
            tt.add_column(col)
        for t in tools:
            tt.add_row(t.name, "[green]✓[/]" if t.ok else "[red]✗[/]", t.path if t.ok else t.hint)
        out.print(tt)
    return 3 if any(not f.ok for f in features) else 0


def _doctor_hosts(hosts: str, fmt: str) -> int:
    from netlab.multihost.doctor import doctor

    findings = doctor(hosts)
    if fmt == "json":
        rows = [
            {"where": f.where, "hosts": list(f.hosts), "check": f.what, "ok": f.ok, "detail": f.detail}
            for f in findings
        ]
        out.print(json_output.dumps("doctor", {"inventory": hosts, "findings": rows}), markup=False)
    elif fmt == "tsv":
        from netlab.rows import tsv

        _write_raw(
            tsv(
                ("host", "check", "ok", "detail"),
                [[f.where, f.what, "yes" if f.ok else "no", f.detail] for f in findings],
            )
        )
    else:
        _print_rows(
            ("host", "check", "", "detail"),
            [[f.where, f.what, "✓" if f.ok else "✗", f.detail] for f in findings],
        )
    if any(not f.ok and f.what != "kernel" for f in findings):
        return EXIT_FAILED
    return EXIT_ENVIRONMENT if any(not f.ok for f in findings) else 0


def _held_at_the_end(group: click.Group) -> None:
    """Each command holds signals from the moment it returns: one landing after that is
    honoured by interrupts.finish(), not raised into the middle of the exit."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _held_at_the_end(command)
        elif command.callback is not None:
            command.callback = _holding(command.callback)


def _holding(callback: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except NetlabError as e:
            e.command, e.options = click.get_current_context().info_name, kwargs
            raise
        finally:
            interrupts.hold()

    return run


_held_at_the_end(cli)


def main() -> NoReturn:
    """`python -m netlab.cli` (the `netlab` command's entry point is netlab.client.main)."""
    from netlab.client import run_served

    served = run_served(sys.argv[1:], _program_name())  # by `netlab serve`'s child, if one runs and can
    _exit(_command() if served is None else served)


def run_here() -> NoReturn:
    """The command, run by this process: netlab.client.main found no server to run it."""
    _exit(_command())


def _program_name() -> str:
    """What usage messages call this program, as click tells it (`netlab`, `python -m
    netlab.cli`): a server's child names the caller's, not its own."""
    from click.utils import _detect_program_name

    return _detect_program_name()


def _command(args: list[str] | None = None, prog: str | None = None) -> int:
    """Run the command `args` (sys.argv's by default; `prog`: the program's name in
    usage messages, click's guess by default) in this process: its exit code."""
    global _as_command
    interrupts.handle_signals()  # again: main() may be called without the import above
    if not _as_command:
        _as_command = True
        gc.set_threshold(50_000, 20, 100)
    interrupts.started()
    code = _run(args, prog)
    if os.environ.get("NETLAB_TIMING"):
        from netlab import timing

        timing.total()
    return interrupts.finish(code)


def _exit(code: int) -> NoReturn:
    """Exit with `code`. When no other thread is left to wait for and nothing profiles or
    traces the command (cProfile writes its file after SystemExit, coverage its data),
    the exit handlers run and the process ends without Python's finalization, which frees
    every object one by one (0.015-0.03 s after a 500-pod reconcile) only for the kernel
    to drop them all."""
    if threading.active_count() == 1 and sys.getprofile() is None and sys.gettrace() is None:
        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)  # a closed pipe: as Python's own shutdown handles it
        os._exit(code)
    sys.exit(code)


def _run(args: list[str] | None = None, prog: str | None = None) -> int:
    """The command's exit code; every error and interruption becomes one line on stderr."""
    try:
        code = cli.main(args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        code = EXIT_BAD_INPUT if e.exit_code == 2 else e.exit_code
        _report_click_error(e, code, sys.argv[1:] if args is None else args)
        return code
    except click.exceptions.Abort:  # click's own prompt saw Ctrl-C or end of input
        err.print("netlab: interrupted by SIGINT; nothing was changed", markup=False)
        return 130
    except Interrupted as e:
        err.print(f"netlab: {e}", markup=False)
        interrupts.take_pending()  # a second signal during the undo: this one is the answer
        return e.exit_code
    except NetlabError as e:
        err.print(f"netlab: {e}", markup=False)
        _report_error(e)
        return e.exit_code
    except BaseException as e:  # a command that changes nothing, or before it started to
        signum = interrupts.signum_of(e)  # also when a lazy import wrapped it
        if signum is None:
            raise
        err.print(f"netlab: interrupted by {interrupts.name_of(signum)}; nothing was changed", markup=False)
        return 128 + signum
    return code if isinstance(code, int) else 0


def _report_click_error(e: click.ClickException, code: int, argv: list[str]) -> None:
    """A usage error click found (a missing argument, a bad option value) is also the
    command's --json error document, as any other error is."""
    ctx = getattr(e, "ctx", None)
    command = ctx.command.name if ctx is not None else argv[0] if argv else None
    own = argv[: argv.index("--")] if "--" in argv else argv  # a command's own --json (exec … -- CMD --json) is not
    wants_json = (
        "--json" in own
        or "--format=json" in own
        or any(a == "--format" and b == "json" for a, b in itertools.pairwise(own))
    )
    if command in json_output.COMMANDS and wants_json:
        error = UsageError(e.format_message()) if code == EXIT_BAD_INPUT else NetlabError(e.format_message())
        error.exit_code = code
        out.print(json_output.dumps(str(command), json_output.error_fields(error)), markup=False)


def _report_error(e: NetlabError) -> None:
    """The error also as the command's --json document on stdout and as its --junit report."""
    options = e.options or {}
    if e.command is None:
        return
    if options.get("as_json") or options.get("fmt") == "json":
        out.print(json_output.dumps(e.command, json_output.error_fields(e)), markup=False)
    if options.get("junit") and not str(e).startswith("--junit "):  # not again into the path refused
        from netlab.report import error_junit

        try:
            with open(options["junit"], "wb") as f:
                f.write(error_junit(e.command, str(options.get("target") or ""), e))
        except OSError as oe:
            err.print(f"netlab: --junit {options['junit']}: cannot write the report: {oe.strerror or oe}", markup=False)


if __name__ == "__main__":
    main()
