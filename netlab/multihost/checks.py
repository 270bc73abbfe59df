"""`netlab check --hosts`: a split lab's checks, each probe sent from its client's host and
each observation (route, rule, conntrack, IPVS, counters, capture) read on its node's
host, judged on the coordinator by the same runner and judges as a lab on one machine,
so the report (text, JSON, JUnit, pcap) is the same.

Before any check runs, every host is asked what it has of the lab: a host where it is
not up, or was built from another version of the file (or placement), is named — its
checks would judge a different lab.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from netlab import interrupts, timing
from netlab.errors import Interrupted, UsageError
from netlab.lifecycle import CheckRun, CheckSettings, select_checks, with_dead_responders
from netlab.multihost import early, lifecycle
from netlab.multihost.engine import HostsFailed
from netlab.multihost.inventory import Inventory
from netlab.multihost.lifecycle import load_split
from netlab.multihost.record import read_record, record_dir
from netlab.multihost.remote import HostAgents, RemoteObserver
from netlab.multihost.split import Split
from netlab.multihost.ssh import Ssh, on_each
from netlab.naming import is_lab_file, netns_name
from netlab.observations import ObserveError
from netlab.plan.build import build_plan
from netlab.probes.checks import LabContext, Verdict, run_checks, trace_failures
from netlab.probes.responders import ResponderHealth


@dataclass(frozen=True)
class OverHosts:
    """What a command over hosts works on: the lab file, its variant and the inventory."""

    source: str
    variant: str | None
    inventory: str


def over_hosts(target: str, variant: str | None, hosts: str | None, command: str) -> OverHosts:
    """TARGET (a lab file, or the name of a lab this machine built over hosts) with the
    inventory given, else the one it was built with."""
    if is_lab_file(target):
        if hosts is None:
            raise UsageError(f"{command} --hosts needs the inventory: --hosts FILE or $NETLAB_HOSTS")
        return OverHosts(target, variant, hosts)
    name = f"{target}-{variant}" if variant else target
    record = read_record(name)
    if record is None:
        raise UsageError(
            f"lab {name} was not built over hosts from this machine (no record of it in {record_dir()}); "
            f"give its file: netlab {command} --hosts FILE LAB.yaml"
        )
    return OverHosts(record.source, record.variant, hosts or record.inventory)


@contextlib.contextmanager
def lab_over_hosts(where: OverHosts, inventory: Inventory, split: Split) -> Iterator[LabContext]:
    """A LabContext of the split lab whose observer and probe sender are its hosts' agents
    (one ssh session per host, closed on leaving); every host is asked first whether its
    part is up and built from this file (HostsFailed naming each that is not)."""
    lab = split.lab.name
    hosts = [inventory.host(h) for h in split.sub_labs]
    started = early.take(hosts)  # started before this process loaded the lab, if they are these
    ssh = started.ssh if started else Ssh()
    with ssh, HostAgents(ssh, hosts, started.agents if started else None) as agents:
        with timing.phase("hosts: agents started, each host's part asked"):
            _same_lab_everywhere(agents, split, inventory, where)
        host_of = {netns_name(lab, node): host for node, host in split.placement.of_node.items()}
        observer = RemoteObserver(agents, host_of)
        yield LabContext(
            split.lab,
            {node: netns_name(lab, node) for node in split.lab.nodes},
            observer=observer,
            send_probes=observer.send_probes,
        )


def check(
    where: OverHosts,
    only: tuple[str, ...] = (),
    how: CheckSettings | None = None,
    on_done: Callable[[Verdict], None] | None = None,
    *,
    build: bool = False,
) -> CheckRun:
    """Run the checks of a lab that is up over hosts; with `build`, bring it up on its
    hosts first (where.source is a file) and take it down afterwards — unless it was
    already up on every host, which is then left as it was."""
    how = how or CheckSettings()
    started = time.monotonic()
    with timing.phase("hosts: lab loaded, placed and split"):
        inventory, split = load_split(where.source, where.variant, where.inventory)
    built = _build(where, inventory, split, only) if build else None
    undone = "the lab built for them was taken down on every host" if built else "nothing was changed"
    try:
        with lab_over_hosts(where, inventory, split) as ctx:
            ctx.keep_frames = how.keep_frames
            checks = select_checks(split.lab, only)
            with timing.phase("hosts: checks run"):
                verdicts: list[Verdict] = run_checks(ctx, checks, on_done=on_done, fail_fast=how.fail_fast)
            judged = {v.name for v in verdicts}
            if how.trace:
                verdicts = trace_failures(ctx, [c for c in checks if c.name in judged], verdicts)
            verdicts = _explain_dead_responders(ctx, split, where, verdicts)
    except BaseException as err:
        signum = interrupts.signum_of(err)
        if signum is None:
            raise
        raise Interrupted(
            f"check of lab {split.lab.name} interrupted by {interrupts.name_of(signum)} "
            f"while running its checks; {undone}",
            signum,
        ) from None
    finally:
        if built:
            _take_down(built, inventory, where)
    not_run = [c.name for c in checks if c.name not in judged]
    return CheckRun(split.lab.name, verdicts, time.monotonic() - started, built is not None, ctx.frames, not_run)


def _build(where: OverHosts, inventory: Inventory, split: Split, only: tuple[str, ...]) -> str | None:
    """`check --up` over hosts: the lab up on its hosts; its name if this run built it."""
    select_checks(split.lab, only)  # a wrong --only fails before building
    result = lifecycle.up(where.source, where.variant, inventory, split)
    return None if len(result.already_up) == len(result.hosts) else result.lab


def _take_down(lab: str, inventory: Inventory, where: OverHosts) -> None:
    """Take down on its hosts the lab this check built, to the end whatever signal lands
    meanwhile (answered afterwards), as netlab.lifecycle.take_down_built does on one host."""
    with interrupts.deferred():
        done = lifecycle.down(lab, inventory)
    if done.unreachable:
        names = ", ".join(r.host for r in done.unreachable)
        raise HostsFailed(
            f"lab {lab} was checked but could not be taken down on {names}: "
            f"run `netlab down {lab} --hosts {where.inventory}` once it is back"
        )


def _same_lab_everywhere(agents: HostAgents, split: Split, inventory: Inventory, where: OverHosts) -> None:
    """Every host has its part of the lab up, built from the sub-lab this file gives it."""
    lab = split.lab.name
    hosts = list(split.sub_labs)

    def ask(host: str) -> str:
        try:
            found = agents.on(host).call("lab", lab=lab)
        except ObserveError as e:
            return str(e).removeprefix(f"host {host}: ")
        if found is None:
            return f"lab {lab} is not up there"
        if found.status != "up":
            return f"lab {lab} is not fully up there (status: {found.status})"
        if found.fingerprint != build_plan(split.sub_labs[host]).fingerprint:
            return f"its part of lab {lab} was built from another version of {where.source} (or another placement)"
        return ""

    problems = [
        f"host {h} ({inventory.host(h).ssh_host}): {why}"
        for h, why in zip(hosts, on_each(hosts, ask), strict=True)
        if why
    ]
    if problems:
        again = f"netlab up --hosts {where.inventory} {where.source}" + (
            f" --variant {where.variant}" if where.variant else ""
        )
        raise HostsFailed(
            f"cannot check lab {lab}:\n  " + "\n  ".join(problems) + f"\n  (`{again}` builds or updates it)"
        )


def _explain_dead_responders(ctx: LabContext, split: Split, where: OverHosts, verdicts: list[Verdict]) -> list[Verdict]:
    """A failed probe to a port served on a host whose responder process is dead says so
    (as on one machine), from each host's own health of its responders."""
    if all(v.passed for v in verdicts) or not isinstance(ctx.observer, RemoteObserver):
        return verdicts
    agents, lab, hosts = ctx.observer.agents, split.lab.name, list(split.sub_labs)

    def ask(host: str) -> list[ResponderHealth]:
        try:
            found: list[ResponderHealth] = agents.on(host).call("responders", lab=lab)
        except ObserveError:
            return []  # a host that cannot say: its failures stay as they are
        return [h for h in found if not h.running]

    dead = {h: found for h, found in zip(hosts, on_each(hosts, ask), strict=True) if found}
    if not dead:
        return verdicts
    served = {
        int(entry.partition("/")[2])
        for name, node in split.lab.nodes.items()
        if split.placement.of_node.get(name) in dead
        for entry in node.serve
    }
    where_dead = "; ".join(f"on host {h}: {'; '.join(map(str, found))}" for h, found in dead.items())
    again = f"netlab down {lab} && netlab up --hosts {where.inventory} {where.source}" + (
        f" --variant {where.variant}" if where.variant else ""
    )
    why = f"nothing answers there: the lab's responder process is dead ({where_dead}); `{again}` starts it again"
    return with_dead_responders(verdicts, served, why)
