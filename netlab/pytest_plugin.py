"""netlab as a pytest plugin: build real labs in your own (root) test suite and test the
datapath with real traffic. See docs/pytest.md.

Fixtures (the plugin is registered through the `pytest11` entry point):

- `netlab_lab(spec, *, name=None, unique=False, variant=None) -> LabHandle`: function scope; every
  call builds a lab, all of them are taken down when the test ends (pass, fail, error
  or Ctrl-C).
- `netlab_lab_module(...)`: the same, module scope: the first call builds the lab, later
  calls with the same arguments in the same module return that lab; down after the
  module's last test.

`lab_checks(spec)` turns the lab file's own `checks:` into tests (one per check, one lab
per module). `running_lab(spec)` is the context manager behind all of them, for a
fixture of any other scope.

`spec` is a lab file (a relative path is looked up next to the test file, then in
pytest's rootdir) or a dict with the same content; `variant` builds one of its
`variants:` (the lab NAME-VARIANT, or `name`). Not root, or the kernel lacks
what the lab requires → skip (fail when CI=true); a bad lab → fail with file:line.

Everything heavy (pyroute2, the check runner) is imported only when a lab is built: the
plugin is loaded into every pytest run of an environment where netlab is installed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, overload

import pytest

if TYPE_CHECKING:
    from netlab.kernel.observer import KernelObserver
    from netlab.lab.model import Lab
    from netlab.lab.topology import Topology
    from netlab.observations import CtEntry, Drop, IpvsState, RouteAnswer, RuleView
    from netlab.probes.checks import LabContext, Verdict
    from netlab.probes.flow import ProbeResult

__all__ = ["LabFactory", "LabHandle", "LabSpec", "format_verdict", "lab_checks", "running_lab", "unique_name"]

LabSpec = str | os.PathLike[str] | Mapping[str, Any]
NAME_LIMIT = 32  # a lab name's length limit (netlab.lab.values.LabName)
CI_VALUES = ("true", "1", "yes")


def in_ci() -> bool:
    """CI=true: no lab test may skip (not root, a missing kernel feature); it fails instead."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def unique_name(base: str) -> str:
    """`base-1a2b3c`, cut to fit the 32-character limit of lab names."""
    suffix = uuid.uuid4().hex[:6]
    return f"{base[: NAME_LIMIT - len(suffix) - 1].rstrip('-_')}-{suffix}"


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


# ---------------------------------------------------------------- the lab a test gets


class LabHandle:
    """A lab that is up: its model, its namespaces, and typed ways to look at it. Every
    look at the kernel goes through `observer` (the live KernelObserver by default)."""

    def __init__(self, model: Lab, nodes: dict[str, str], source: Path, observer: KernelObserver | None = None) -> None:
        from netlab.lab.parse import topology

        self.model = model
        self.source = source  # the file it was built from (a temporary copy for dicts and renames)
        self._nodes = dict(nodes)
        self._topo: Topology = topology(model)
        self._observer = observer
        self._ctx: LabContext | None = None

    def __repr__(self) -> str:
        return f"<netlab lab {self.name}: {', '.join(self._nodes)}>"

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def nodes(self) -> dict[str, str]:
        """node → network namespace (`LAB.NODE`)."""
        return dict(self._nodes)

    def ns(self, node: str) -> str:
        if node not in self._nodes:
            raise ValueError(f"lab {self.name} has no node {node!r} (nodes: {', '.join(self._nodes)})")
        return self._nodes[node]

    def address(self, node: str, family: Literal[4, 6] | None = None) -> str:
        """The address `to: NODE` means in a check: the node's first global address
        (of that family), in lab-file order."""
        from netlab.lab.targets import node_addresses

        self.ns(node)
        found = node_addresses(self._topo, node, family)
        if not found:
            raise ValueError(f"node {node} of lab {self.name} has no {f'IPv{family} ' if family else ''}address")
        return found[0]

    @property
    def context(self) -> LabContext:
        """What netlab.probes.checks needs to run checks against this lab."""
        if self._ctx is None:
            from netlab.probes.checks import LabContext

            self._ctx = (
                LabContext(self.model, self.nodes)
                if self._observer is None
                else LabContext(self.model, self.nodes, self._observer)
            )
        return self._ctx

    @property
    def observer(self) -> KernelObserver:
        """How this lab's kernel is read (netlab.kernel.observer)."""
        return self.context.observer

    # ------------------------------------------------------------ traffic

    # count=1 (the default) → one result, any other count → a list. The other options are
    # the lab file's probe keys, validated by its own schema (netlab.lab.checks.Probe), not
    # re-declared here.
    @overload
    def probe(self, frm: str, to: str, *, count: Literal[1] = 1, **options: Any) -> ProbeResult: ...

    @overload
    def probe(self, frm: str, to: str, *, count: int, **options: Any) -> list[ProbeResult]: ...

    def probe(self, frm: str, to: str, *, count: int = 1, **options: Any) -> ProbeResult | list[ProbeResult]:
        """Real traffic from node `frm` to `to` (an address, a node, NODE:PORT or
        [v6]:PORT), resolved exactly as a lab-file probe check resolves it; `options` are
        the probe check's keys (proto, port, timeout, src, sport, family, ttl, tos, dscp,
        mark, payload). The protocol defaults to tcp when there is a port, else icmp.
        count > 1 returns a list. `ttl` sets the TTL / hop limit (traceroute-style: the
        ICMP sender is in `icmp_from`); with `payload`, `.intact` and `.delivery` say
        whether it arrived as sent."""
        from netlab.lab.checks import Probe
        from netlab.lab.targets import probe_target
        from netlab.probes.checks import probe_requests
        from netlab.probes.flow import probe_many

        fields = {"from": frm, "to": to, "count": count, **options}
        p = Probe.model_validate({k: v for k, v in fields.items() if v is not None})
        dst, dport = probe_target(self._topo, set(self._nodes), p)
        requests = probe_requests(p, self.ns(p.from_), dst, dport)
        # As the check runner does: a pinned source port means one after another.
        results = probe_many(requests, workers=1 if p.sport is not None else min(8, len(requests)))
        return results[0] if count == 1 else results

    # ------------------------------------------------------------ the kernel's view

    def route_get(self, node: str, dst: str, **options: Any) -> RouteAnswer:
        """`ip route get DST …` in the node, as the kernel answers it (`.rule`: the rule
        that decided, when that can be told). `options` are a route check's keys (src —
        `from` in a lab file —, iif, oif, vrf, fwmark, ipproto, sport, dport, dscp, uid),
        validated by its schema; `vrf=`: `ip route get vrf NAME DST`."""
        from netlab.lab.checks import RouteQuerySpec
        from netlab.probes.checks import route_query

        fields = {"on": node, "get": dst, **options}
        if "src" in fields:
            fields["from"] = fields.pop("src")
        spec = RouteQuerySpec.model_validate({k: v for k, v in fields.items() if v is not None})
        return self.observer.route_get(self.ns(node), [route_query(spec)])[0]

    def rules(self, node: str) -> list[RuleView]:
        return self.observer.rules(self.ns(node))

    def conntrack(self, node: str, flow: ProbeResult | None = None) -> list[CtEntry]:
        """The node's conntrack table; with `flow`, only that probe's entries (best first)."""
        entries = self.observer.conntrack(self.ns(node))
        if flow is None:
            return entries
        from netlab.probes.judge import flow_entries

        return flow_entries(entries, flow)

    def ipvs(self, node: str, flow: ProbeResult | None = None) -> IpvsState:
        """The node's IPVS: `.services` (each with its `.reals`: address, port, forward,
        weight, active/inactive connections) and `.connections` (`ipvsadm -Lnc`); with
        `flow`, only that probe's connections. `.text` reads like ipvsadm -Ln / -Lnc."""
        from netlab.observations import IpvsState

        state = self.observer.ipvs(self.ns(node))
        if flow is None:
            return state
        from netlab.probes.ipvs_flow import ipvs_flow

        return IpvsState(state.services, tuple(ipvs_flow(state.connections, flow)))

    def policy_drop(self, flow: ProbeResult) -> Drop | None:
        """The network policy rule that dropped this probe's flow (`.node`, `.rule` as its
        comment says it, `.by`: the policy or default-deny), or None when no policy did."""
        from netlab.probes.drops import drop_of

        return drop_of(flow, self.context.policy_drops())

    def exec(self, node: str, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`ip netns exec LAB.NODE ARGV…`, output captured as text."""
        if not argv:
            raise ValueError("exec needs a command")
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(node), *map(str, argv)],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    # ------------------------------------------------------------ the lab's own checks

    def run_check(self, name: str) -> Verdict:
        from netlab.probes.checks import run_check

        for check in self.model.checks:
            if check.name == name:
                return run_check(self.context, check)
        names = ", ".join(repr(c.name) for c in self.model.checks) or "none"
        raise ValueError(f"lab {self.name} has no check {name!r} (its checks: {names})")

    def run_checks(self) -> list[Verdict]:
        from netlab.probes.checks import run_checks

        return run_checks(self.context)


def format_verdict(v: Verdict) -> str:
    """A failed check as an assertion message: what was seen, why it failed, the evidence."""
    head = f"check {v.name!r} failed: {v.summary}" + (f" ({v.attempts} attempts)" if v.attempts > 1 else "")
    lines = [head] + ([f"  {v.description}"] if v.description else [])
    lines += [f"  {reason}" for reason in v.reasons]
    lines += [f"    {line}" for line in v.evidence]
    return "\n".join(lines)


# ---------------------------------------------------------------- building and taking down


def resolve_path(spec: str | os.PathLike[str], test_file: Path | None, rootdir: Path | None) -> Path:
    """A relative lab file is looked up next to the test file, then in the rootdir (a
    LabError when it is in neither)."""
    from netlab.errors import LabError, Problem

    path = Path(spec)
    if path.is_absolute():
        return path
    tried = list(dict.fromkeys(d / path for d in (test_file.parent if test_file else None, rootdir) if d is not None))
    if not tried:
        return path.resolve()
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    looked = " and ".join(str(c) for c in tried)
    raise LabError([Problem(os.fspath(spec), 0, "", f"no such lab file (looked at {looked})")])


_Loaded = tuple["Lab", dict[str, Any] | None, Path | None]


@dataclass
class _Prepared:
    model: Lab  # validated, expanded
    path: Path  # what `up` reads
    tmpdir: Path | None  # ours to remove afterwards
    variant: str | None = None  # the variant of `path` to build


def _plain(value: Any) -> Any:
    """A dict lab as YAML can hold it (tuples → lists, paths → strings); a copy."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return copy.deepcopy(value)


def _load(
    spec: LabSpec, test_file: Path | None, rootdir: Path | None, name: str | None, variant: str | None = None
) -> _Loaded:
    """Validate the lab (its own name or `name`; with `variant`, that variant's lab):
    (model, data to write or None, file). A variant's data is written as a lab of its own."""
    from netlab.errors import LabError, UsageError
    from netlab.lab.source import Source, parse_yaml
    from netlab.load import anchor_files, load_lab, load_lab_data, variant_data

    try:
        if isinstance(spec, Mapping):
            # a relative `file:` (a ruleset) is looked up next to the test file, like a lab file
            data = anchor_files(_plain(spec), test_file.parent if test_file else Path.cwd())
            if name is not None and "name" not in data:
                data["name"] = name  # a dict may leave its name to the test
            model = load_lab_data(data, variant=variant)  # the whole dict's errors, variants' too
            if variant is not None:
                data = variant_data(data, variant)
            elif name is not None:
                data.pop("variants", None)  # the renamed copy is this lab alone (its variants' names may not fit)
            if name is not None:
                data["name"] = name
            return (load_lab_data(data) if variant is not None or name is not None else model), data, None
        path = resolve_path(spec, test_file, rootdir)
        model = load_lab(path, variant)  # the file's own errors, with its file:line
        if name is None or name == model.name:
            return model, None, path
        data, source, _ = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        if variant is not None:
            data, source = variant_data(data, variant, source), Source(str(path))
        else:
            data.pop("variants", None)  # the renamed copy is this lab alone (its variants' names may not fit)
        data["name"] = name
        data = anchor_files(data, path.parent)  # the renamed copy is written elsewhere
        return load_lab_data(data, source), data, path
    except (LabError, UsageError) as err:
        problem = str(err)
    _fail(problem)  # outside the except: the message alone, not chained to the LabError


_CI_NO_SKIP = "(CI=true: a lab that cannot be built fails instead of skipping)"


def _skip_or_fail_in_ci(reason: str) -> None:
    if in_ci():
        _fail(f"{reason}\n{_CI_NO_SKIP}")
    pytest.skip(reason)


def _prepare(
    spec: LabSpec,
    name: str | None,
    unique: bool,
    test_file: Path | None,
    rootdir: Path | None,
    variant: str | None = None,
) -> _Prepared:
    model, data, path = _load(spec, test_file, rootdir, name, variant)
    if unique:
        model, data, path = _load(spec, test_file, rootdir, unique_name(model.name), variant)
    if os.geteuid() != 0:
        _skip_or_fail_in_ci(
            f"netlab needs root to build lab {model.name} (it creates network namespaces); run pytest as root"
        )
    if data is None:
        assert path is not None
        return _Prepared(model, path, None, variant)
    import yaml

    tmpdir = Path(tempfile.mkdtemp(prefix=f"netlab-{model.name}-"))
    file = tmpdir / f"{model.name}.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return _Prepared(model, file, tmpdir)


def _up(prepared: _Prepared) -> LabHandle:
    """Build the lab; a skip or a failure for what stops it, with netlab's own words."""
    from netlab import lifecycle
    from netlab.errors import AlreadyUp, Interrupted, MissingFeature, NetlabError, NotRoot
    from netlab.kernel.netlink import NetlinkDriver
    from netlab.state import read_state

    name = prepared.model.name
    driver = NetlinkDriver()
    # Skips and failures are raised outside the `except` blocks, so pytest shows netlab's
    # message alone (not chained to the exception it came from).
    skip = fail = None
    try:
        result = lifecycle.up(prepared.path, driver, variant=prepared.variant)
    except MissingFeature as err:
        if in_ci():
            fail = f"{err}\n(CI={os.environ.get('CI')}: a missing kernel feature fails instead of skipping)"
        else:
            skip = str(err)
    except NotRoot as err:
        skip = f"netlab needs root: {err}"
        if in_ci():
            fail, skip = f"{skip}\n{_CI_NO_SKIP}", None
    except AlreadyUp as err:
        fail = f"{err}\n(to build the same lab twice, give each its own name: name=… or unique=True)"
    except Interrupted as err:
        raise KeyboardInterrupt(str(err)) from err  # rolled back; stop the run as Ctrl-C would
    except NetlabError as err:
        fail = str(err)
    except BaseException:
        # up() rolls back on its own; only a Ctrl-C landing after its last write leaves a lab.
        st = read_state(name)
        if st is not None and st.source == str(prepared.path.resolve()):
            _down(name)
        raise
    finally:
        driver.close()
    if skip is not None:
        pytest.skip(skip)
    if fail is not None:
        _fail(fail)
    if result.already_up:
        _fail(
            f"lab {name} is already up (from {prepared.path}), and this test did not build it; take it down "
            f"with `netlab down {name}`, or give the test its own lab name: name=… or unique=True"
        )
    st = read_state(name)
    nodes = dict(st.nodes) if st is not None else dict(zip(prepared.model.nodes, result.plan.namespaces, strict=True))
    return LabHandle(prepared.model, nodes, prepared.path)


def _down(name: str) -> None:
    from netlab import teardown
    from netlab.kernel.netlink import NetlinkDriver

    driver = NetlinkDriver()
    try:
        teardown.down(name, driver)
    finally:
        driver.close()


@contextlib.contextmanager
def running_lab(
    spec: LabSpec,
    *,
    name: str | None = None,
    unique: bool = False,
    variant: str | None = None,
    test_file: Path | None = None,
    rootdir: Path | None = None,
) -> Iterator[LabHandle]:
    """Build a lab for the `with` block and take it down afterwards, however the block
    ends. For fixtures of any scope; `test_file`/`rootdir` anchor a relative path
    (else it is relative to the current directory). `variant` builds that variant of
    the lab file (named NAME-VARIANT unless `name` is given)."""
    prepared = _prepare(spec, name, unique, test_file, rootdir, variant)
    try:
        handle = _up(prepared)
        try:
            yield handle
        finally:
            _down(handle.name)
    finally:
        if prepared.tmpdir is not None:
            shutil.rmtree(prepared.tmpdir, ignore_errors=True)


class LabFactory:
    """What `netlab_lab` / `netlab_lab_module` return: call it to build a lab."""

    def __init__(self, request: pytest.FixtureRequest, *, shared: bool) -> None:
        self._test_file = Path(request.path)
        self._rootdir = Path(request.config.rootpath)
        self._shared = shared
        self._stack = contextlib.ExitStack()
        self._labs: dict[str, LabHandle | BaseException] = {}

    def __call__(
        self, spec: LabSpec, *, name: str | None = None, unique: bool = False, variant: str | None = None
    ) -> LabHandle:
        """Build a lab from a file or a dict; `variant` builds one of its `variants:`
        (named NAME-VARIANT); `name` renames it, `unique=True` appends a random suffix
        (so the same file can be up more than once, e.g. under xdist)."""
        key = json.dumps(
            [spec if isinstance(spec, Mapping) else os.fspath(spec), name, unique, variant], sort_keys=True, default=str
        )
        if self._shared and key in self._labs:
            known = self._labs[key]
            if isinstance(known, BaseException):
                raise known  # the same skip or failure as the first time, without trying again
            return known
        try:
            handle = self._stack.enter_context(
                running_lab(
                    spec, name=name, unique=unique, variant=variant, test_file=self._test_file, rootdir=self._rootdir
                )
            )
        except (pytest.skip.Exception, pytest.fail.Exception) as outcome:
            if self._shared:
                self._labs[key] = outcome
            raise
        if self._shared:
            self._labs[key] = handle
        return handle

    def close(self) -> None:
        """Take every lab down, last built first."""
        self._labs.clear()
        self._stack.close()


@pytest.fixture
def netlab_lab(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """netlab_lab(spec, *, name=None, unique=False, variant=None) → LabHandle; every lab is taken down
    when the test ends, however it ends."""
    factory = LabFactory(request, shared=False)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def netlab_lab_module(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """Like netlab_lab, for the whole module: the first call builds the lab, later calls
    with the same arguments return it; taken down after the module's last test."""
    factory = LabFactory(request, shared=True)
    try:
        yield factory
    finally:
        factory.close()


# ---------------------------------------------------------------- a lab's checks as tests


@dataclass(frozen=True)
class _NotACheck:
    """The one parameter of a lab_checks test when there is no check to run."""

    message: str
    skip: bool = False


_CHECKS_ATTR = "_netlab_lab_checks"


def lab_checks(
    spec: LabSpec, *, name: str | None = None, unique: bool = False, variant: str | None = None
) -> Callable[..., None]:
    """A test function parametrized by the lab's check names, sharing one lab per module:

        test_docker_bridge = lab_checks("labs/docker-bridge.yaml")
        test_broken = lab_checks("labs/lab.yaml", variant="broken")   # the variant's checks

    A relative path is looked up next to the test file, then in pytest's rootdir."""

    def test_lab_check(netlab_check: str | _NotACheck, netlab_lab_module: LabFactory) -> None:
        if isinstance(netlab_check, _NotACheck):
            if netlab_check.skip:
                pytest.skip(netlab_check.message)
            _fail(netlab_check.message)
        lab = netlab_lab_module(spec, name=name, unique=unique, variant=variant)
        verdict = lab.run_check(netlab_check)
        if not verdict.passed:
            _fail(format_verdict(verdict))

    setattr(test_lab_check, _CHECKS_ATTR, (spec, variant))
    return test_lab_check


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    found = getattr(metafunc.function, _CHECKS_ATTR, None)
    if found is None:
        return
    spec, variant = found
    from netlab.errors import LabError, UsageError
    from netlab.load import load_lab, load_lab_data

    params: list[str | _NotACheck]
    try:
        if isinstance(spec, Mapping):
            model = load_lab_data(_plain(spec), variant=variant)
        else:
            model = load_lab(resolve_path(spec, metafunc.definition.path, metafunc.config.rootpath), variant)
    except (LabError, UsageError) as err:
        params, ids = [_NotACheck(str(err))], ["lab-file-error"]
    else:
        params = [c.name for c in model.checks] or [_NotACheck(f"lab {model.name} has no checks", skip=True)]
        ids = [c.name for c in model.checks] or ["no-checks"]
    metafunc.parametrize("netlab_check", params, ids=ids)
