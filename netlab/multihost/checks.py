"""`netlab check --hosts`: a split lab's checks, each probe sent from its client's host and
each observation (route, rule, conntrack, IPVS, counters, capture) read on its node's
host, judged on the coordinator by the same runner and judges as a lab on one machine,
so the report (text, JSON, JUnit, pcap) is the same.

Before any check runs, every host is asked what it has of the lab: a host where it is
not up, or was built from another version of the file (or placement), is named — its
checks would judge a different lab.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from netlab import interrupts
from netlab.errors import Interrupted, UsageError
from netlab.lifecycle import CheckRun, CheckSettings, select_checks
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
from netlab.probes.checks import LabContext, Verdict, run_checks


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


def check(
    where: OverHosts,
    only: tuple[str, ...] = (),
    how: CheckSettings | None = None,
    on_done: Callable[[Verdict], None] | None = None,
) -> CheckRun:
    """Run the checks of a lab that is up over hosts."""
    how = how or CheckSettings()
    started = time.monotonic()
    inventory, split = load_split(where.source, where.variant, where.inventory)
    checks = select_checks(split.lab, only)
    lab = split.lab.name
    try:
        with Ssh() as ssh, HostAgents(ssh, [inventory.host(h) for h in split.sub_labs]) as agents:
            _same_lab_everywhere(agents, split, inventory, where)
            host_of = {netns_name(lab, node): host for node, host in split.placement.of_node.items()}
            observer = RemoteObserver(agents, host_of)
            ctx = LabContext(
                split.lab,
                {node: netns_name(lab, node) for node in split.lab.nodes},
                observer=observer,
                send_probes=observer.send_probes,
            )
            ctx.keep_frames = how.keep_frames
            verdicts: list[Verdict] = run_checks(
                ctx,
                checks,
                on_done=on_done,
                fail_fast=how.fail_fast,
            )
    except BaseException as err:
        signum = interrupts.signum_of(err)
        if signum is None:
            raise
        raise Interrupted(
            f"check of lab {lab} interrupted by {interrupts.name_of(signum)} while running its checks; "
            "nothing was changed",
            signum,
        ) from None
    judged = {v.name for v in verdicts}
    not_run = [c.name for c in checks if c.name not in judged]
    return CheckRun(lab, verdicts, time.monotonic() - started, False, ctx.frames, not_run)


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
