"""The up lab a reading command works on (`check`, `trace`, `capture`): its LabContext,
from the lab's state and its file. Apart from lifecycle (building, reconciling, taking
down), so that `netlab trace` loads neither the plan's ops nor the driver (~25 ms of its
start-up)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from netlab.errors import UsageError, require_root
from netlab.lab.render import fingerprint, lab_data
from netlab.labdiff import key_changes, listed
from netlab.load import load_lab, load_named
from netlab.naming import is_lab_file
from netlab.state import read_state
from netlab.teardown import resolve_lab_name

if TYPE_CHECKING:
    from netlab.probes.checks import LabContext


def lab_context(target: str, variant: str | None = None) -> LabContext:
    """An up lab, ready for checks: TARGET is its name or its lab file (with `variant`,
    that variant's lab). The checks are read from the file each time (they are not part
    of what was built); what *was* built must still match the file, or the checks would
    judge a different lab."""
    from netlab.probes.checks import LabContext

    require_root("check", reads_only=True)
    is_file = is_lab_file(target)
    lab = load_lab(target, variant) if is_file else None
    name = lab.name if lab is not None else resolve_lab_name(target, variant)
    st = read_state(name)
    if st is None or st.status != "up":
        how = f"netlab up {target}" + (f" --variant {variant}" if variant else "") if is_file else "netlab up LAB_FILE"
        why = "is not up" if st is None else f"is not fully up (status: {st.status})"
        raise UsageError(
            f"lab {name} {why}; run `{how}` first, or `netlab check --up FILE` to build, "
            "check and take it down in one go"
        )
    if lab is not None and str(Path(target).resolve()) != st.source and os.path.exists(st.source):
        # Two files, one lab name: the checks that judge the lab are those of the file it was built from.
        raise UsageError(
            f"lab {name} was built from {st.source}, not from {target}; its checks are that file's: netlab check {name}"
        )
    if lab is None:
        if not os.path.exists(st.source):
            raise UsageError(
                f"lab {name} was built from {st.source}, which is gone; pass the lab file: netlab check FILE"
            )
        # the base lab or one of its variants (NAME-VARIANT): whichever has the name
        found = load_named(st.source, name)
        if found is None:
            raise UsageError(
                f"lab {name} was built from {st.source}, which no longer defines it "
                f"(its name or variant changed); take it down: netlab down {name}"
            )
        lab, _, variant = found
    if fingerprint(lab) != st.fingerprint:
        again = (target if is_file else st.source) + (f" --variant {variant}" if variant else "")
        built = {k: v for k, v in st.spec.items() if k != "checks"}
        changes = key_changes(built, {k: v for k, v in lab_data(lab).items() if k != "checks"}) if built else []
        raise UsageError(
            "\n".join(
                [
                    f"lab {name} is up, but its file has changed since (other than its checks):",
                    *listed(changes),
                    f"rebuild it first: netlab down {name} && netlab up {again}",
                ]
            )
            if changes
            else f"lab {name} is up, but its file has changed since (other than its checks); "
            f"rebuild it first: netlab down {name} && netlab up {again}"
        )
    return LabContext(lab, dict(st.nodes))
