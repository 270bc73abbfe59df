"""Changes to a running lab's links, at run time: impair one (`netlab impair`: a netem
qdisc, or none with --clear) or flap it (`netlab link … down|up`).

They act on the kernel only, through the same ops and driver as `up` (SetNetem,
DeleteNetem, SetLink): the lab's state and file are left as they are, so `status` shows
the change (it reads the kernel) and the lab file's own `netem:` is what a rebuild
restores. The interface is found in the node's namespace as the kernel has it, so any
link of the lab can be changed, also one a cluster section made.
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pydantic import ValidationError

from netlab.deadline import Deadline
from netlab.errors import ApplyError, LabError, MissingFeature, UsageError, require_root
from netlab.kernel.driver import KernelDriver, LinkView, OpFailed
from netlab.lab.netem import Netem
from netlab.load import load_named
from netlab.plan.build import build_plan, netem_op
from netlab.plan.ops import AddRoute, DeleteNetem, Op, SetLink
from netlab.state import lab_lock, read_state
from netlab.teardown import resolve_lab_name


@dataclass(frozen=True)
class LinkEnd:
    lab: str
    node: str
    ifname: str
    ns: str
    source: str  # the lab file it was built from

    def __str__(self) -> str:
        return f"{self.node}:{self.ifname} of lab {self.lab}"


@dataclass(frozen=True)
class Changed:
    """A link end before and after the change, as the kernel shows it."""

    end: LinkEnd
    before: LinkView
    after: LinkView
    routes: int = 0  # the lab's routes of the node put back (`link … up`)


def netem_from_options(options: Mapping[str, object]) -> Netem:
    """`--delay 100ms --loss 5%`… as a link end's `netem:`, with the lab file's checks;
    UsageError naming the option."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return Netem.model_validate(given)
    except ValidationError as err:
        first = err.errors()[0]
        words = re.sub(r"`(\w+):`", r"--\1", first["msg"].removeprefix("Value error, "))  # as options
        raise UsageError(f"--{first['loc'][0]}: {words}" if first["loc"] else words) from None


def find_end(target: str, where: str, driver: KernelDriver, variant: str | None = None) -> LinkEnd:
    """NODE:IF of the lab TARGET (a name or its file), which must be up."""
    node, sep, ifname = where.partition(":")
    if not sep or not node or not ifname:
        raise UsageError(f"{where!r} is not NODE:IF (e.g. node1:eth0)")
    lab = resolve_lab_name(target, variant)
    st = read_state(lab)
    if st is None or st.status != "up":
        raise UsageError(f"lab {lab} is not up" + ("" if st is None else f" (status: {st.status})"))
    if node not in st.nodes:
        raise UsageError(f"lab {lab} has no node {node!r} (nodes: {', '.join(st.nodes)})")
    end = LinkEnd(lab, node, ifname, st.nodes[node], st.source)
    _link(driver, end)
    return end


def _link(driver: KernelDriver, end: LinkEnd) -> LinkView:
    links = driver.observe(end.ns).links
    for link in links:
        if link.name == end.ifname:
            return link
    names = ", ".join(link.name for link in links)
    raise UsageError(f"node {end.node} of lab {end.lab} has no interface {end.ifname!r} (its interfaces: {names})")


def impair(end: LinkEnd, netem: Netem | None, driver: KernelDriver) -> Changed:
    """Give the link end this netem qdisc (replacing any), or with None remove its qdisc."""
    require_root("impair")
    if netem is not None:
        _require_netem()
    what = f"netlab impair {end.node}:{end.ifname}"
    op: Op = netem_op(end.ns, what, end.ifname, netem) if netem else DeleteNetem(end.ns, what, dev=end.ifname)
    return _change(end, op, driver)


def set_link(end: LinkEnd, up: bool, driver: KernelDriver) -> Changed:
    """`ip link set IF up|down` in the node's namespace. The kernel drops every route
    through IF when it goes down and gives back only its addresses' own when it comes up:
    `up` also puts the node's routes of the lab file back (those still there stay)."""
    require_root("link")
    op = SetLink(end.ns, f"netlab link {end.node}:{end.ifname}", name=end.ifname, up=up)
    changed = _change(end, op, driver, _lab_routes(end) if up else [])
    return replace(changed, after=_settled(driver, end, changed.after)) if up else changed


def _settled(driver: KernelDriver, end: LinkEnd, after: LinkView) -> LinkView:
    """The link once the kernel has told its carrier: the operational state follows the
    carrier through linkwatch, up to a second later (more on a loaded machine), so a
    link just set up reads 'down' for a moment even when its peer is up."""
    deadline = Deadline(1.5, f"{end} to report its carrier")
    while after.oper not in ("up", "unknown") and not deadline.expired():
        time.sleep(0.05)
        after = _link(driver, end)
    return after


def _lab_routes(end: LinkEnd) -> list[Op]:
    """The node's routes as the lab file it was built from says (none if it is gone)."""
    try:
        found = load_named(end.source, end.lab)
    except (OSError, LabError):
        return []
    if found is None:
        return []
    return [op for op in build_plan(found[0]).ops if op.ns == end.ns and isinstance(op, AddRoute)]


def _change(end: LinkEnd, op: Op, driver: KernelDriver, then: list[Op] | None = None) -> Changed:
    with lab_lock(end.lab):
        before = _link(driver, end)
        try:
            driver.apply([op], lambda _op: None)
        except OpFailed as err:
            if not (isinstance(op, DeleteNetem) and _no_qdisc(err.reason)):
                raise ApplyError(f"{op.what} ({op.render()})", err.reason) from None
        added: list[Op] = []
        try:
            driver.apply(then or [], added.append)
        except OpFailed as err:  # every route was tried; one that is still there is no failure
            if f"({errno.errorcode[errno.EEXIST]})" not in err.reason:
                raise ApplyError(f"{err.op.what} ({err.op.render()})", err.reason) from None
        return Changed(end, before, _link(driver, end), len(added))


def _no_qdisc(reason: str) -> bool:
    """The kernel's answer to deleting a root qdisc a device does not have: nothing to clear."""
    return f"({errno.errorcode[errno.ENOENT]})" in reason  # "Cannot delete qdisc with handle of zero"


def _require_netem() -> None:
    from netlab.kernel.features import probe_features  # forks a probe child: only when needed

    [status] = probe_features(["netem"])
    if not status.ok:
        raise MissingFeature(f"this kernel lacks netem: {status.detail}\n    → {status.hint}")
