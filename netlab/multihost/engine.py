"""Build and remove a split lab on its hosts: each host runs its own netlab on its sub-lab.

`up`: every host is asked first (reachable, root, netlab's version, whether the lab is
already up there), then each host gets its sub-lab file and builds it, all in parallel.
If one fails, or the coordinator is interrupted, every host this run built on is taken
down again: a host's own `netlab up` undoes its part when it fails, and one still
running is told to stop by its ssh session's stdin closing (UP_SCRIPT), which it does as
on Ctrl-C. A host that had the lab up before this run is left as it was.

`down`: every host of the inventory takes the lab down, in parallel; an unreachable one
is named, the others are cleaned, and running `down` again finishes the job.

Each host keeps its sub-lab's file in SUB_LAB_DIR and its state where netlab always
does, so `netlab down LAB` on one host alone cleans that host.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import yaml

from netlab import __version__, interrupts, timing
from netlab.errors import EXIT_FAILED, Interrupted, NetlabError
from netlab.lab.model import Lab
from netlab.lab.render import lab_data
from netlab.multihost.inventory import Host, Inventory
from netlab.multihost.split import Split
from netlab.multihost.ssh import SSH_FAILED, Reply, Running, Ssh, as_root, on_each
from netlab.naming import STATE_DIR
from netlab.wording import plural

SUB_LAB_DIR = f"{STATE_DIR}/multihost"
# One session per host does it all: one ssh round trip and one start of netlab per host.
# It first says whether the lab was up there before ($3: its state file; a run that is
# interrupted takes down only the hosts that said "none"), then the sub-lab arrives on
# the session's stdin ($2 bytes, written to $1), then `netlab up --expect-version` runs
# (another version of netlab refuses to build; the coordinator then asks the host what
# is wrong, as PROBE_SCRIPT) with the session's stdin watched: when it closes (the
# coordinator is done, interrupted, or the connection is lost) before up is over, up
# gets SIGTERM and undoes what it made. Background jobs read /dev/null unless told
# otherwise: fd 3.
UP_SCRIPT = """exec 3<&0
if [ -e "$3" ]; then echo "netlab-hosts: before: up"; else echo "netlab-hosts: before: none"; fi
(umask 077 && mkdir -p "${1%/*}" && head -c "$2" > "$1") || exit 1
[ "$(wc -c < "$1")" -eq "$2" ] || { echo "netlab: the sub-lab did not arrive whole" >&2; exit 1; }
echo "netlab-hosts: building"
"$0" up --expect-version "$4" "$1" </dev/null &
pid=$!
{ cat <&3 >/dev/null 2>&1; kill -TERM "$pid" 2>/dev/null; } >/dev/null 2>&1 &
watch=$!
wait "$pid"; rc=$?
kill "$watch" 2>/dev/null
exit $rc"""
BEFORE_NONE = "netlab-hosts: before: none"
# How long the coordinator waits for a host's part of `up` (NETLAB_HOSTS_TIMEOUT: seconds):
# far more than a big lab takes (5000 namespaces build in a minute); a host that has not
# ended by then is stopped, named with the step it was at, and every host rolled back.
UP_TIMEOUT = 600.0
UP_STEPS = (  # the last marker a host's session printed → the step it was at
    ("netlab-hosts: building", "its netlab up building its part"),
    ("netlab-hosts: before:", "receiving its sub-lab"),
    ("", "connecting (ssh) and starting its session"),
)
PROBE_SCRIPT = """"$0" --version || exit 127
if [ -e "$1" ]; then echo "state: up"; else echo "state: none"; fi"""
DOWN_SCRIPT = '"$0" down "$1"; rc=$?; [ $rc -ne 0 ] || rm -f "$2"; exit $rc'
_VERSION = re.compile(r"netlab, version (\S+)")


class HostsFailed(NetlabError):
    """A command failed on one host or more; the message names each, and what was undone."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def sub_lab_path(lab: str) -> str:
    return f"{SUB_LAB_DIR}/{lab}.yaml"


@dataclass
class HostsUp:
    lab: str
    hosts: dict[str, int]  # host → its nodes
    already_up: list[str] = field(default_factory=list)  # hosts where the lab was up from the same sub-lab
    seconds: float = 0.0


def up(split: Split, inventory: Inventory) -> HostsUp:
    """Build each host's sub-lab; on any failure or interruption, undo every host's that
    this run built on."""
    lab = split.lab.name
    hosts = [inventory.host(h) for h in split.sub_labs]
    started = time.monotonic()
    with Ssh() as ssh:
        running: list[Running] = []
        try:
            with timing.phase("hosts: each host's up"):
                replies = _build(ssh, hosts, split, running)
        except BaseException as err:
            signum = interrupts.signum_of(err)
            if signum is None:
                raise
            with interrupts.deferred():
                undone = _roll_back(
                    ssh, [h for h, r in zip(hosts, running, strict=False) if BEFORE_NONE in r.output()], lab
                )
            raise Interrupted(
                f"up of lab {lab} interrupted by {interrupts.name_of(signum)}; {undone}", signum
            ) from None
        failed = [r for r in replies if r.code != 0]
        if failed:
            with interrupts.deferred():
                why, refused = _why_failed(ssh, inventory, failed)
                ran = [h for h, r in zip(hosts, replies, strict=True) if BEFORE_NONE in r.out and h.name not in refused]
                undone = _roll_back(ssh, ran, lab)
            # a host's bad input (2) or kernel (3); a host that cannot run this netlab: 1
            codes = [r.code for r in failed if not r.unreachable and r.host not in refused]
            raise HostsFailed(_failure(lab, why, undone), max(codes, default=EXIT_FAILED))
    already = [r.host for r in replies if "already up" in r.out]
    nodes = {h: len(split.sub_labs[h].nodes) for h in split.sub_labs}
    return HostsUp(lab, nodes, already, time.monotonic() - started)


def _why_failed(ssh: Ssh, inventory: Inventory, failed: list[Reply]) -> tuple[list[str], set[str]]:
    """A line for each failed host: what keeps it from running this netlab as root (asked
    on its own: unreachable, sudo, another version), else what its `up` said; and the
    hosts kept from running it (they built nothing: nothing to take down there)."""
    reached = [r for r in failed if "netlab-hosts: before:" in r.out]  # the session ran there
    asked = [r for r in reached if not r.unreachable]
    probes = on_each([inventory.host(r.host) for r in asked], lambda h: _probe(ssh, h, ""))
    probed = dict(zip([r.host for r in asked], probes, strict=True))
    lines, refused = [], set()
    for r in failed:
        if r in reached and r.unreachable:
            lines.append(f"{r.host}: the connection was lost: {r.why()}")
            continue
        problem = host_problem(inventory.host(r.host), probed.get(r.host, r))
        lines.append(problem or f"{r.host}: {r.why()}")
        refused |= {r.host} if problem else set()
    return lines, refused


def _probe(ssh: Ssh, host: Host, lab: str) -> Reply:
    return ssh.run(host, as_root(["sh", "-c", PROBE_SCRIPT, host.netlab, f"{STATE_DIR}/{lab}.json"]), timeout=60)


def host_problem(host: Host, reply: Reply) -> str:
    """What keeps `host` from running this netlab as root, from its reply to a command that
    printed `netlab --version` first; "" when nothing does."""
    found = _VERSION.search(reply.out)
    if reply.unreachable:
        return f"host {host.name} ({host.ssh_host}) is not reachable: {reply.why()}"
    if "sudo" in reply.err and reply.code != 0:
        return (
            f"host {host.name}: netlab runs as root there, and sudo -n refused ({reply.why()}): log in as root "
            "(ansible_user: root) or allow the user passwordless sudo"
        )
    if found is None:
        return (
            f"host {host.name}: cannot run {host.netlab} ({reply.why()}): install netlab there, or set netlab_command"
        )
    if found.group(1) != __version__:
        return (
            f"host {host.name} has netlab {found.group(1)}, this machine {__version__}: every host builds its part "
            f"with its own netlab, so install {__version__} there (the same checkout, or pip install netlab=={__version__})"
        )
    return ""


def _build(ssh: Ssh, hosts: list[Host], split: Split, running: list[Running]) -> list[Reply]:
    """Send each host its sub-lab and run its `netlab up`, all at once (each host's starts
    as soon as its sub-lab is rendered, while the next is); every reply."""
    lab = split.lab.name
    try:
        for host in hosts:
            sub = split.sub_labs[host.name]
            data = render_sub_lab(sub, f"lab {lab}'s part on host {host.name}, from the coordinator").encode()
            state = f"{STATE_DIR}/{lab}.json"
            remote = as_root(
                ["sh", "-c", UP_SCRIPT, host.netlab, sub_lab_path(lab), str(len(data)), state, __version__]
            )
            running.append(ssh.start(host, remote, first=data))
        deadline = time.monotonic() + up_timeout()
        return [r.wait(max(0.0, deadline - time.monotonic()), _overdue) for r in running]
    except BaseException:
        for r in running:  # the remote ups see their stdin close: each undoes its part
            r.stop()
        raise


def up_timeout() -> float:
    try:
        return float(os.environ.get("NETLAB_HOSTS_TIMEOUT") or UP_TIMEOUT)
    except ValueError:
        return UP_TIMEOUT


def _overdue(printed: str) -> str:
    step = next(words for marker, words in UP_STEPS if marker in printed)
    return f"no end within {up_timeout():.0f} s (NETLAB_HOSTS_TIMEOUT), at: {step}; stopped"


def render_sub_lab(sub: Lab, header: str) -> str:
    """A host's sub-lab as YAML, written by libyaml: five times as fast as the hand-styled
    `netlab render` (0.017 s against 0.088 s for 200 pods), which a person reads; the same lab."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(lab_data(sub), Dumper=dumper, sort_keys=False, width=110, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def _roll_back(ssh: Ssh, hosts: list[Host], lab: str) -> str:
    """Take `lab` down on `hosts`; what was undone, in words."""
    replies = on_each(hosts, lambda h: _down_one(ssh, h, lab))
    done = [r.host for r in replies if r.code == 0]
    lost = [r for r in replies if r.code != 0]
    text = f"taken down again on {', '.join(done)}" if done else "nothing to take down"
    if lost:
        text += "; " + "; ".join(f"host {r.host} could not be cleaned ({r.why()})" for r in lost)
        text += f": run `netlab down {lab} --hosts FILE` once {'it is' if len(lost) == 1 else 'they are'} back"
    return text


def _failure(lab: str, why: list[str], undone: str) -> str:
    lines = [f"up of lab {lab} failed on {plural(len(why), 'host')}:"]
    lines += [f"  {text}" for text in why]
    lines.append(f"  {undone}")
    return "\n".join(lines)


def _down_one(ssh: Ssh, host: Host, lab: str) -> Reply:
    return ssh.run(host, as_root(["sh", "-c", DOWN_SCRIPT, host.netlab, lab, sub_lab_path(lab)]), timeout=300)


@dataclass
class HostsDown:
    lab: str
    replies: list[Reply]

    @property
    def unreachable(self) -> list[Reply]:
        return [r for r in self.replies if r.code != 0]


def down(lab: str, inventory: Inventory) -> HostsDown:
    """Take `lab` down on every host of the inventory; a signal waits until all are done."""
    with Ssh() as ssh, interrupts.deferred():
        return HostsDown(lab, on_each(inventory.hosts, lambda h: _down_one(ssh, h, lab)))


__all__ = ["SSH_FAILED", "HostsDown", "HostsFailed", "HostsUp", "down", "up"]
