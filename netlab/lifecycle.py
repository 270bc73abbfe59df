"""The verbs behind the CLI and the pytest plugin: bring a lab up, take it down, say
what is up. Each is the pipeline of architecture.md in one readable function:
load → expand → plan → (check kernel) → apply → state.
"""

from __future__ import annotations

import gc
import os
import shlex
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netlab import interrupts, timing, unchanged
from netlab.apply import apply_plan
from netlab.context import lab_context
from netlab.errors import (
    AlreadyUp,
    ApplyError,
    Interrupted,
    MissingFeature,
    TooFewDescriptors,
    UsageError,
    require_root,
)
from netlab.expand.cluster import ClusterLayout, cluster_data
from netlab.kernel.driver import KernelDriver
from netlab.lab.consistency import rule_features
from netlab.lab.ipvs import needs_ipvs
from netlab.lab.model import LINK_KINDS, Bridge, Check, Lab
from netlab.lab.parse import topology
from netlab.lab.render import lab_data
from netlab.lab.sysctls import normalise
from netlab.lab.targets import node_addresses
from netlab.labdiff import key_changes, listed
from netlab.load import LabOrigin, load_lab, load_lab_located, peek_lab_name
from netlab.naming import is_lab_file
from netlab.plan.build import Plan, build_plan
from netlab.plan.ops import DeleteNetns, Op
from netlab.plan.record import UnknownOp, ops_from_data, ops_to_data
from netlab.preflight import check_firewall, check_sysctls, has_firewall
from netlab.probes.responder_server import Service
from netlab.probes.responders import ResponderError, start_responders
from netlab.probes.responders import health as responder_health
from netlab.reconcile.diff import Reconcile, reconcile
from netlab.reconcile.run import ReconcileFailed, apply_reconcile, put_back
from netlab.state import (
    LabState,
    StateStamp,
    StateUnreadable,
    file_hash,
    lab_lock,
    read_state,
    remove_state,
    responder_log_path,
    state_stamp,
    write_state,
)
from netlab.teardown import (
    stop_lab_processes,
    take_down,
    tear_down,
)

if TYPE_CHECKING:  # the runner pulls in the kernel observers: imported only by `check`
    from netlab.kernel.features import Probe
    from netlab.pcap import Frame
    from netlab.probes.checks import Verdict


def load_and_plan(path: str | Path, variant: str | None = None) -> tuple[Lab, Plan]:
    lab = load_lab(path, variant)
    return lab, build_plan(lab)


def dry_run(path: str | Path, variant: str | None = None) -> str:
    """What `up` would do: the plan; for a lab up from an older version of this file (as
    root, who can read its state), the reconcile that changes it in place."""
    lab, plan = load_and_plan(path, variant)
    source = str(Path(path).resolve())
    try:
        existing = read_state(lab.name) if os.geteuid() == 0 else None
    except StateUnreadable:
        existing = None
    if existing is None or existing.source != source or existing.status != "up":
        return plan.render()
    if existing.fingerprint == plan.fingerprint:
        return f"# lab {lab.name} is up from {source} as it is: `up` changes nothing\n"
    try:
        old = ops_from_data(existing.ops) if existing.ops else None
    except UnknownOp:
        old = None
    if old is None:
        return (
            f"# lab {lab.name} is up, from a state netlab cannot reconcile: up --replace builds this\n" + plan.render()
        )
    from netlab.kernel.sysctl import fresh_value

    head = f"# lab {lab.name} is up from {source} (sha256 {existing.source_hash[:12]}), which has changed since\n"
    return head + reconcile(lab.name, old, plan.ops, lambda _ns, key: fresh_value(key)).render()


def check_requirements(lab: Lab, verified: frozenset[str] = frozenset(), probe: Probe | None = None) -> list[str]:
    """Probe the kernel features the lab needs (but those in `verified`: probed for the
    running lab it changes) with `probe` (probe_features' child, or one forked ahead);
    MissingFeature names what is missing. Returns them all."""
    from netlab.kernel.features import probe_features  # forks a probe child: only when needed

    features = required_features(lab)
    wanted = sorted(features - verified)
    missing = [f for f in (probe or probe_features)(wanted) if not f.ok] if wanted else []
    if missing:
        lines = [f"lab {lab.name} needs kernel features this kernel lacks:"]
        lines += [f"  {f.name}: {f.detail}\n    → {f.hint}" for f in missing]
        raise MissingFeature("\n".join(lines))
    return sorted(features)


def _in_a_vm(path: str | Path, variant: str | None) -> str:
    """The command that runs this lab (file `path`, as `variant`) under a kernel with everything."""
    again = shlex.join(["netlab", "vm", "run", "--", "netlab", "check", "--up", str(path)])
    return f"  → this lab under such a kernel: sudo {again}" + (f" --variant {shlex.quote(variant)}" if variant else "")


def required_features(lab: Lab) -> set[str]:
    interfaces = topology(lab).interfaces.values()
    kinds = {i.kind for i in interfaces} & set(LINK_KINDS)  # a fallback device needs its module too
    features = {"netns"} | kinds | set(lab.requires)
    if any(i.settings.netem is not None for i in interfaces):
        features.add("netem")  # a link end's `netem:` is a qdisc of sch_netem
    if any(
        i.settings.vlans is not None or (isinstance(i.settings, Bridge) and i.settings.vlan_filtering)
        for i in interfaces
    ):
        features.add("bridge_vlan")  # CONFIG_BRIDGE_VLAN_FILTERING
    nodes = lab.nodes.values()
    if any(node.nftables or node.iptables for node in nodes):
        features.add("nftables")
    if any(node.ipsets for node in nodes):
        features.add("ipset")
    if any(needs_ipvs(node.ipvs, node.sysctls) for node in nodes):
        features.add("ipvs")  # `ipvs:` objects and net.ipv4.vs.* sysctls need ip_vs, as a link kind its module
    features |= {f for node in nodes for rule in node.rules for f in rule_features(rule)}
    if any(k.replace("/", ".").startswith("net.bridge.") for node in nodes for k in node.sysctls):
        features.add("br_netfilter")  # the net.bridge.* sysctls exist only once br_netfilter is loaded
    return features


@dataclass
class UpResult:
    lab: str
    plan: Plan
    already_up: bool = False
    done: list[Op] = field(default_factory=list)
    services: int = 0  # responders started
    checks: int = 0  # checks in the lab file
    reconciled: Reconcile | None = None  # the lab was up from an older file: what changed in place
    replaced: bool = False  # `--replace`: the lab was up, and was taken down and built again


def up(
    path: str | Path,
    driver: KernelDriver,
    progress: Callable[[Op], None] | None = None,
    variant: str | None = None,
    replace: bool = False,
) -> UpResult:
    """Build the lab in `path` (with `variant`: that variant's lab, NAME-VARIANT). If it is
    up from an older version of the file, change it in place into what the file now says
    (reconcile); with `replace`, take it down and build it again instead.

    Interrupted (SIGINT, SIGTERM) at any moment, it undoes what it did and raises
    Interrupted. Once the lab is recorded as up, a signal is only recorded
    (interrupts.pending()): the caller reports success first, then honours it."""
    building: list[str] = []  # the lab's name, once known
    # Reading, making and comparing thousands of ops makes no cycles worth collecting, and
    # the collector's passes over them cost 0.015 s of a 500-pod reconcile's 0.36 s.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _up(path, driver, progress, variant, building, replace)
    except BaseException as err:
        signum = interrupts.signum_of(err)
        if signum is None:
            raise
        what = f"lab {building[0]}" if building else str(path)
        raise Interrupted(
            f"up of {what} interrupted by {interrupts.name_of(signum)} before anything was "
            "created; nothing was changed",
            signum,
        ) from None
    finally:
        if collecting:
            gc.enable()


def _enough_descriptors(lab: str, namespaces: int) -> None:
    """Refuse a lab this process cannot hold open (exit 3, nothing created) instead of
    failing on "Too many open files" halfway and rolling back."""
    from netlab.kernel.netns import descriptors_short

    short = descriptors_short(namespaces)
    if short is not None:
        needed, allowed = short
        raise TooFewDescriptors(
            f"lab {lab} has {namespaces} namespaces: building it holds two descriptors for each, "
            f"{needed} in all, but this process may open only {allowed} (RLIMIT_NOFILE); raise the "
            f"hard limit (as root: `ulimit -n {needed}` in the shell that runs netlab, "
            "LimitNOFILE= for a service)"
        )


def _up(
    path: str | Path,
    driver: KernelDriver,
    progress: Callable[[Op], None] | None,
    variant: str | None,
    building: list[str],
    replace: bool = False,
) -> UpResult:
    from netlab.kernel.features import probing_ahead

    # A lab that is up was probed when it was built: a reconcile usually needs no probe,
    # and forking one ahead would only compete for the CPU (it imports the route reader).
    guess = _Verified() if replace or os.geteuid() != 0 else _verified(peek_lab_name(path, variant))
    ahead = nullcontext(None) if guess.features else probing_ahead()
    source = str(Path(path).resolve())
    read_first = unchanged.digest(source)  # what it was built from is recorded only if it held still
    with ahead as probe:  # its child imports what it probes with while the lab loads
        with timing.phase("load"):
            lab, where = load_lab_located(path, variant)
            built_from = _built_from(source, read_first, where)
        building.append(lab.name)
        with timing.phase("plan"):
            plan = build_plan(lab)
        require_root("up")
        with timing.phase("preflight"):
            verified = guess if guess.lab == lab.name else _Verified() if replace else _verified(lab.name)
            try:
                features = check_requirements(lab, verified.features, probe)
            except MissingFeature as e:
                raise MissingFeature(f"{e}\n{_in_a_vm(path, variant)}") from None
            _enough_descriptors(lab.name, len(plan.namespaces))
            # a name this kernel lacks is bad input (exit 2), before anything exists
            check_sysctls(lab, where, verified.sysctls, probe.fresh_sysctl_files() if probe is not None else None)
            if has_firewall(lab):
                # A ruleset nft or iptables-nft-restore refuses is bad input: exit 2, before anything exists.
                check_firewall(lab, where)
    spec = lab_data(lab)
    with lab_lock(lab.name):
        with timing.phase("read state"):
            existing = None if replace else verified.state_now(lab.name)
        replaced = False
        if replace:
            replaced = _take_down_for_replace(lab.name, driver)
        elif existing is not None:
            if _reconcilable(existing, plan, source):
                cluster = _cluster_data(lab, where.cluster)
                existing.features = features
                records = _Records(spec, cluster, built_from)
                return _reconcile(lab, plan, existing, driver, progress, source, variant, records)
            _refuse_or_accept_existing(existing, plan, spec, source, variant)
            _remember_inputs(existing, variant, built_from)
            return UpResult(lab.name, plan, already_up=True)
        # Only names of the lab's own form (LAB.NODE) can be its: reading the mark of every
        # namespace on the machine costs a netlink round trip each.
        ours = driver.namespaces(lambda name: name.startswith(f"{lab.name}."))
        strays = [n for n, mark in ours.items() if mark and mark[0] == lab.name]
        if strays:
            raise AlreadyUp(
                f"lab {lab.name} has namespaces but no state ({', '.join(strays[:5])}"
                f"{', …' if len(strays) > 5 else ''}); run `netlab down {lab.name}` first"
            )
        nodes = {node: ns for node, ns in zip(lab.nodes, plan.namespaces, strict=True)}
        state = LabState(
            lab.name,
            source,
            plan.fingerprint,
            "building",
            nodes,
            source_hash=file_hash(source),
            cluster=_cluster_data(lab, where.cluster),
            variant=variant,
            features=features,
        )
        try:
            # Written before anything exists, so even `kill -9` leaves `down` a full list;
            # inside the try, so an interruption right after it removes it again. A lab
            # that is not up is never compared or reconciled: its plan, ops and spec (~8 ms
            # of JSON for 500 pods) are recorded once, when it is.
            write_state(state)
            done = apply_plan(plan, driver, progress)
        except BaseException:
            with interrupts.deferred():
                remove_state(lab.name)  # the rollback removed everything it named
            raise
        state.pids = _serve_or_tear_down(lab, nodes, driver)
        # From here the lab is up: a signal is recorded until the caller has said so and
        # honours it (interrupts.release()), so it can no longer undo a reported success.
        interrupts.hold()
        state.status = "up"
        state.plan, state.ops, state.spec = [op.render() for op in plan.ops], ops_to_data(plan.ops), spec
        state.inputs = unchanged.still(built_from)
        write_state(state)
        services = len(lab_services(lab, nodes))
        return UpResult(
            lab.name, plan, done=done, services=services, checks=len(lab.checks), replaced=replace and replaced
        )


def _remember_inputs(existing: LabState, variant: str | None, built_from: dict[str, str]) -> None:
    """A lab found up from this file whose state records other inputs (another netlab's, or
    none: an older netlab wrote it) gets these, so the next `up` of the same file is told
    from them without loading it (netlab.unchanged). Its plan is this file's: the same
    fingerprint."""
    inputs = unchanged.still(built_from)
    if inputs and existing.inputs != inputs and existing.variant == variant:
        existing.inputs = inputs
        write_state(existing)


def _built_from(source: str, read_first: str | None, where: LabOrigin) -> dict[str, str]:
    """The inputs of the lab just loaded (netlab.unchanged), if the lab file is still what
    was read before loading it; {} otherwise."""
    found = unchanged.inputs(source, sorted({os.path.abspath(f) for f in where.files.values()}))
    return found if read_first is not None and found.get(source) == read_first else {}


@dataclass(frozen=True)
class _Verified:
    """What this kernel is known to have because the running lab has it."""

    lab: str | None = None
    features: frozenset[str] = frozenset()
    sysctls: frozenset[str] = frozenset()  # normalised names (lab.sysctls.normalise)
    state: LabState | None = None  # as read, and which version of the file it was
    stamp: StateStamp | None = None

    def state_now(self, lab: str) -> LabState | None:
        """The lab's state: the one read already if the file is still that version (the
        lab's lock is held now; reading 1.4 MB of JSON again costs 0.006 s)."""
        if self.state is not None and self.lab == lab and self.stamp is not None and state_stamp(lab) == self.stamp:
            return self.state
        return read_state(lab)


def _verified(lab: str | None) -> _Verified:
    """The kernel features probed when the running lab `lab` was built, and the sysctls it
    set: a reconcile probes only the features it needs beyond them (forking the probe
    costs 0.03 s) and looks for only the sysctl names the lab did not have (which makes
    and walks a namespace). Read before the lab's lock is taken: a lab that is up again
    meanwhile was probed too."""
    if lab is None:
        return _Verified()
    stamp = state_stamp(lab)  # before reading: a file replaced meanwhile is read again
    try:
        existing = read_state(lab)
    except StateUnreadable:
        return _Verified(lab)
    if existing is None or existing.status != "up":
        return _Verified(lab, state=existing, stamp=stamp)
    nodes = existing.spec.get("nodes", {})
    keys = {normalise(key) for node in nodes.values() if isinstance(node, dict) for key in node.get("sysctls", {})}
    return _Verified(lab, frozenset(existing.features), frozenset(keys), existing, stamp)


def _take_down_for_replace(lab: str, driver: KernelDriver) -> bool:
    """`up --replace`: whatever of the lab is up goes first (a signal waits for it); True if
    anything was there."""
    with interrupts.deferred():
        report = tear_down(lab, driver)
    interrupts.raise_pending()
    return bool(report.deleted or report.had_state)


def _reconcilable(existing: LabState, plan: Plan, source: str) -> bool:
    """Up from this same file, fully built, recorded op by op, and the plan differs."""
    return (
        existing.status == "up"
        and existing.source == source
        and bool(existing.ops)
        and existing.fingerprint != plan.fingerprint
    )


@dataclass(frozen=True)
class _Records:
    """What a reconciled lab's new state records besides its plan."""

    spec: dict[str, Any]  # lab_data of the lab
    cluster: dict[str, Any] | None  # its cluster's, netlab.expand.cluster.cluster_data
    inputs: dict[str, str]  # what it is built from, netlab.unchanged (recorded if it held still)


def _reconcile(
    lab: Lab,
    plan: Plan,
    existing: LabState,
    driver: KernelDriver,
    progress: Callable[[Op], None] | None,
    source: str,
    variant: str | None,
    records: _Records,
) -> UpResult:
    """Change the running lab in place into `plan`; on failure it is put back as it was."""
    from netlab.kernel.sysctl import fresh_value

    try:
        with timing.phase("reconcile: read ops"):
            old = ops_from_data(existing.ops)
    except UnknownOp as err:
        raise AlreadyUp(
            f"lab {lab.name} is up, but its state was written by another netlab version ({err}), so netlab "
            f"cannot tell what to change; rebuild it: netlab up --replace {source}"
        ) from None
    with timing.phase("reconcile: diff"):
        rec = reconcile(lab.name, old, plan.ops, lambda _ns, key: fresh_value(key))
    nodes = {node: ns for node, ns in zip(lab.nodes, plan.namespaces, strict=True)}
    restart = _responders_change(existing, lab, nodes, rec)
    if restart:
        stop_lab_processes(lab.name, existing.pids)
    before = replace(existing)
    existing.status, existing.nodes = "reconciling", {**existing.nodes, **nodes}
    applied = False
    try:
        with timing.phase("reconcile: state"):
            write_state(existing)  # `down` after a crash from here finds old and new namespaces
        with timing.phase("reconcile: apply"):
            apply_reconcile(rec, old, driver, lambda _ns, key: fresh_value(key), progress)
        applied = True
        pids = start_lab_responders(lab, nodes) if restart else before.pids
    except BaseException as err:
        with interrupts.deferred():
            # Every change was made but the responders could not start (or a signal came):
            # the kernel goes back too, not just the processes.
            undo_error = (
                put_back(lab.name, plan.ops, old, driver, lambda _ns, key: fresh_value(key)) if applied else None
            )
            if restart and before.pids:
                before.pids = _start_responders(lab.name, _spec_services(before.spec, before.nodes))
            write_state(before)
        if applied:
            raise _responders_refused(lab.name, err, undo_error) from None
        raise
    with timing.phase("reconcile: the new state"):
        state = replace(
            before,
            fingerprint=plan.fingerprint,
            nodes=nodes,
            plan=[op.render() for op in plan.ops],
            source_hash=file_hash(source),
            spec=records.spec,
            ops=ops_to_data(plan.ops),
            variant=variant,
            cluster=records.cluster,
            updated=datetime.now(UTC).isoformat(timespec="seconds"),
            reconciles=before.reconciles + 1,
            pids=pids,
            inputs=unchanged.still(records.inputs),
        )
        interrupts.hold()
        write_state(state)
    return UpResult(lab.name, plan, services=len(lab_services(lab, nodes)), checks=len(lab.checks), reconciled=rec)


def _responders_refused(lab: str, err: BaseException, undo_error: str | None) -> BaseException:
    """The error of a reconcile whose responders could not start (or a signal came then):
    it was put back as it was, unless `undo_error` says why not."""
    signum = interrupts.signum_of(err)
    if signum is not None:
        back = "it was put back as it was" if undo_error is None else f"putting it back failed: {undo_error}"
        return Interrupted(
            f"reconcile of lab {lab} interrupted by {interrupts.name_of(signum)} while starting its responders; {back}",
            signum,
        )
    if isinstance(err, ResponderError):
        where = f" ({err.service.proto}/{err.service.port} on {err.service.node})" if err.service else ""
        return ReconcileFailed(lab, f"responders of lab {lab}{where}", str(err), undo_error)
    return err


def _responders_change(existing: LabState, lab: Lab, nodes: dict[str, str], rec: Reconcile) -> bool:
    """The responder process must start again: what is served changed, or a namespace it
    serves in is made anew (its sockets stay in the old one)."""
    old = {(node, entry) for node, spec in existing.spec.get("nodes", {}).items() for entry in spec.get("serve", [])}
    new = {(node, entry) for node, spec in lab.nodes.items() for entry in spec.serve}
    if old != new:
        return True
    served = {existing.nodes.get(node) for node, _ in old}
    return any(isinstance(s.op, DeleteNetns) and s.op.ns in served for s in rec.steps)


def _cluster_data(lab: Lab, layout: ClusterLayout | None) -> dict[str, Any] | None:
    if layout is None:
        return None
    topo = topology(lab)
    pods = [pod for names in layout.pods.values() for pod in names]
    return cluster_data(layout, {pod: (node_addresses(topo, pod) or [""])[0] for pod in pods})


def take_down_built(lab: str, driver: KernelDriver) -> None:
    """Take down the lab a command built for itself (`check --up`), to the end whatever
    signal arrives meanwhile; the caller answers it afterwards. take_down alone may be
    interrupted while it waits for the lab's lock (as `down` should be): here that left
    the lab up, its lock file behind, and the command saying "nothing was changed"."""
    with interrupts.deferred():
        take_down(lab, driver)


def _serve_or_tear_down(lab: Lab, nodes: dict[str, str], driver: KernelDriver) -> list[int]:
    """Start the lab's responders; if they cannot start (or a signal lands), the lab is
    built but cannot serve what it promises: take it all down again."""
    try:
        return start_lab_responders(lab, nodes)
    except BaseException as err:
        with interrupts.deferred():
            tear_down(lab.name, driver)
        signum = interrupts.signum_of(err) or interrupts.take_pending()
        if signum is not None:
            raise Interrupted(
                f"up of lab {lab.name} interrupted by {interrupts.name_of(signum)} while starting "
                "its responders; everything created so far was removed",
                signum,
            ) from None
        if isinstance(err, ResponderError):
            what = f"responders of lab {lab.name}" + (
                f" ({err.service.proto}/{err.service.port} on {err.service.node})" if err.service else ""
            )
            raise ApplyError(what, str(err), rolled_back=True) from None
        raise


def lab_services(lab: Lab, nodes: dict[str, str]) -> list[Service]:
    """The responders the lab's nodes `serve:`, as (namespace, node, proto, port)."""
    return _services({node: spec.serve for node, spec in lab.nodes.items()}, nodes)


def _spec_services(spec: dict[str, Any], nodes: dict[str, str]) -> list[Service]:
    """The responders of a lab as its state records it (lab_data)."""
    return _services({node: n.get("serve", []) for node, n in spec.get("nodes", {}).items()}, nodes)


def _services(serves: dict[str, list[str]], nodes: dict[str, str]) -> list[Service]:
    out = []
    for node, entries in serves.items():
        for entry in entries:
            proto, _, port = entry.partition("/")
            out.append(Service(nodes[node], node, proto, int(port)))  # type: ignore[arg-type]
    return out


def start_lab_responders(lab: Lab, nodes: dict[str, str]) -> list[int]:
    """One responder process for the whole lab (none if nothing is served); its log
    goes next to the state file."""
    return _start_responders(lab.name, lab_services(lab, nodes))


def _start_responders(lab: str, services: list[Service]) -> list[int]:
    if not services:
        return []
    return [start_responders(services, log_path=responder_log_path(lab), lab=lab)]


def _refuse_or_accept_existing(
    existing: LabState, plan: Plan, spec: dict[str, Any], source: str, variant: str | None = None
) -> None:
    """A lab of this name is up: fine if it was built from this file and the file builds
    the same (checks are re-read by `check`); otherwise AlreadyUp, saying from which file
    it was built and every key that differs."""
    name = existing.lab
    if existing.status != "up":
        raise AlreadyUp(
            f"an earlier `netlab up` of lab {name} did not finish (status: {existing.status}); "
            f"run `netlab down {name}` first, or rebuild it: netlab up --replace {source}"
        )
    if existing.source == source and existing.fingerprint == plan.fingerprint:
        return
    changes = key_changes(existing.spec, spec) if existing.spec else []
    ops = _plan_changes(existing, plan)
    if existing.source != source:
        lines = [
            f"lab {name} is already up, built from {existing.source}; {source} defines a lab of the same "
            "name" + (", and it differs:" if changes or ops else " with the same content")
        ]
    else:
        lines = [f"lab {name} is already up from {source}, and the file differs from what was built:"]
    lines += listed(changes)
    lines += [f"  in {'ip(8) commands' if changes else 'the plan'}:", *listed(ops, "    ")] if ops else []
    if existing.source != source:
        lines.append(f"Take it down first (netlab down {name}), or give this file's lab another name")
    else:
        again = f"{source} --variant {variant}" if variant else source
        lines.append(
            f"Its state predates reconcile (no ops recorded), so netlab cannot change it in place: "
            f"netlab up --replace {again}"
        )
    raise AlreadyUp("\n".join(lines))


def _plan_changes(existing: LabState, plan: Plan) -> list[str]:
    """For a state written before netlab recorded the lab itself: what differs, op by op."""
    old, new = set(existing.plan), {op.render() for op in plan.ops}
    # (a ruleset's op spans several lines: its text, indented under it)
    return [f"- {line}".replace("\n", "\n  ") for line in existing.plan if line not in new] + [
        f"+ {op.render()}".replace("\n", "\n  ") for op in plan.ops if op.render() not in old
    ]


# ---------------------------------------------------------------- checks


def explain_dead_responders(lab: Lab, verdicts: list[Verdict]) -> list[Verdict]:
    """A probe to a served port that was refused (or unanswered) while the lab's responder
    process is dead: say so, instead of a bare "refused"."""
    st = read_state(lab.name)
    dead = [h for h in responder_health(st.pids, responder_log_path(lab.name)) if not h.running] if st else []
    if not dead:
        return verdicts
    served = {int(entry.partition("/")[2]) for node in lab.nodes.values() for entry in node.serve}
    why = (
        f"nothing answers there: the lab's responder process is dead ({'; '.join(map(str, dead))}); "
        f"`netlab down {lab.name} && netlab up {st.source if st else 'FILE'}` starts it again"
    )
    return with_dead_responders(verdicts, served, why)


def with_dead_responders(verdicts: list[Verdict], served: set[int], why: str) -> list[Verdict]:
    """Each failed verdict with a probe to a port of `served` refused or unanswered, saying
    `why` (a responder process that serves them is dead)."""
    out = []
    for v in verdicts:
        hit = [p for p in v.probes if p.get("outcome") in ("refused", "timeout") and p.get("dport") in served]
        if v.passed or not hit:
            out.append(v)
            continue
        out.append(replace(v, summary=f"{v.summary} — the lab's responder is dead", reasons=[why, *v.reasons]))
    return out


@dataclass
class CheckRun:
    lab: str
    verdicts: list[Verdict]
    seconds: float
    built: bool = False  # `--up`: this run built the lab (and took it down again)
    frames: dict[str, list[Frame]] = field(default_factory=dict)  # check → its capture, with keep_frames
    not_run: list[str] = field(default_factory=list)  # the checks fail_fast left out after a failure


def select_checks(lab: Lab, only: tuple[str, ...]) -> list[Check]:
    """The checks whose name contains any of `only` (all when empty)."""
    if not only:
        return list(lab.checks)
    chosen = [c for c in lab.checks if any(word.lower() in c.name.lower() for word in only)]
    if not chosen:
        names = "\n  ".join(c.name for c in lab.checks) or "(the lab has no checks)"
        raise UsageError(f"no check of lab {lab.name} matches {', '.join(map(repr, only))}; its checks:\n  {names}")
    return chosen


@dataclass(frozen=True)
class CheckSettings:
    """How the checks run. keep_frames: every probe check captures (see
    LabContext.keep_frames) and the run carries the frames (`check --pcap`); trace: each
    failed probe check's probe is sent again, traced, and its verdict carries the walk;
    fail_fast: no check starts once one has failed (the run lists them as not run)."""

    keep_frames: bool = False
    trace: bool = False
    fail_fast: bool = False


def check(
    target: str,
    driver: KernelDriver,
    *,
    build: bool = False,
    only: tuple[str, ...] = (),
    on_done: Callable[[Verdict], None] | None = None,
    progress: Callable[[Op], None] | None = None,
    variant: str | None = None,
    how: CheckSettings = CheckSettings(),
) -> CheckRun:
    """Run the checks of an up lab (with `variant`, of that variant's lab); with `build`,
    bring TARGET (a file) up first and take it down afterwards — unless it was already
    up, which is then left as it was. `how`: see CheckSettings."""
    from netlab.probes.checks import run_checks, trace_failures

    started = time.monotonic()
    result: UpResult | None = None
    if build:
        if not is_lab_file(target):
            raise UsageError(f"`--up` needs a lab file, got {target!r}")
        select_checks(load_lab(target, variant), only)  # a wrong --only fails before building
        result = up(target, driver, progress, variant)
    built = result is not None and not result.already_up
    what = f"lab {result.lab}" if result else target
    undone = "the lab built for them was taken down" if built else "nothing was changed"
    try:
        if result is not None and not result.already_up:
            interrupts.release()  # up() held signals from the moment it recorded the lab as up
        interrupts.raise_pending()
        ctx = lab_context(target, variant)
        ctx.keep_frames = how.keep_frames
        checks = select_checks(ctx.lab, only)
        verdicts = run_checks(ctx, checks, on_done=on_done, fail_fast=how.fail_fast)
        judged = {v.name for v in verdicts}
        ran, not_run = [c for c in checks if c.name in judged], [c.name for c in checks if c.name not in judged]
        if how.trace:
            verdicts = trace_failures(ctx, ran, verdicts)
        verdicts = explain_dead_responders(ctx.lab, verdicts)
    except BaseException as err:
        signum = interrupts.signum_of(err)
        if signum is None:
            raise
        raise Interrupted(
            f"check of {what} interrupted by {interrupts.name_of(signum)} while running its checks; {undone}", signum
        ) from None
    finally:
        if result is not None and built:
            take_down_built(result.lab, driver)  # by name: the variant's lab, not the file's base lab
    signum = interrupts.take_pending()
    if signum is not None:
        raise Interrupted(
            f"check of {what} interrupted by {interrupts.name_of(signum)} after its checks ran; {undone}", signum
        )
    return CheckRun(ctx.lab.name, verdicts, time.monotonic() - started, built, ctx.frames, not_run)
