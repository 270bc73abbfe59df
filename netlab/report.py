"""Verdicts → what people and machines read: a ✓/✗ table with the reasons in words,
JSON, and JUnit XML (for CI systems that draw test reports)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from netlab.errors import NetlabError
from netlab.pcap import Frame
from netlab.probes.checks import Verdict


def counts(verdicts: Sequence[Verdict]) -> tuple[int, int]:
    passed = sum(v.passed for v in verdicts)
    return passed, len(verdicts) - passed


def print_text(console: Console, lab: str, verdicts: Sequence[Verdict], seconds: float) -> None:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check")
    table.add_column("observed")
    for v in verdicts:
        mark = "[green]✓[/]" if v.passed else "[red]✗[/]"
        name = escape(v.name) + (f" [dim]({v.attempts} attempts)[/]" if v.attempts > 1 else "")
        table.add_row(mark, name, escape(v.summary))
    console.print(table)
    failed = [v for v in verdicts if not v.passed]
    for v in failed:
        console.print(f"\n[red]✗ {escape(v.name)}[/]" + (f" — {escape(v.description)}" if v.description else ""))
        for reason in v.reasons:
            console.print(f"    {escape(reason)}")
        for line in v.evidence:
            console.print(f"    [dim]{escape(line)}[/]")
        for line in v.walk():
            console.print(f"    {escape(line)}", highlight=False)
    passed, nfailed = counts(verdicts)
    colour = "green" if not nfailed else "red"
    console.print(f"\n[{colour}]lab {escape(lab)}: {passed} passed, {nfailed} failed[/] in {seconds:.2f} s")


def to_json(lab: str, verdicts: Sequence[Verdict], seconds: float) -> dict[str, Any]:
    passed, failed = counts(verdicts)
    return {
        "lab": lab,
        "passed": passed,
        "failed": failed,
        "seconds": round(seconds, 3),
        "checks": [v.to_json() for v in verdicts],
    }


def to_junit(lab: str, verdicts: Sequence[Verdict], seconds: float) -> bytes:
    """One <testsuite> named after the lab; one <testcase> per check, with the reasons
    as the failure message and the evidence as its text."""
    _, failed = counts(verdicts)
    suite = ET.Element(
        "testsuite",
        name=f"netlab.{lab}",
        tests=str(len(verdicts)),
        failures=str(failed),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
    )
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"netlab.{lab}", name=v.name, time=f"{v.seconds:.3f}")
        if not v.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(v.reasons), type=v.kind)
            failure.text = "\n".join([*v.reasons, *v.evidence, *v.walk()])
        out = ET.SubElement(case, "system-out")
        out.text = v.summary
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def error_junit(command: str, target: str, error: NetlabError) -> bytes:
    """The JUnit report of a run that ended in an error before any verdict: one test
    case with an <error> naming it (each problem of a bad lab file on a line)."""
    name = f"netlab.{target or command}"
    suite = ET.Element("testsuite", name=name, tests="1", failures="0", errors="1", skipped="0", time="0.000")
    case = ET.SubElement(suite, "testcase", classname=name, name=f"netlab {command} {target}".rstrip(), time="0.000")
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    problem = ET.SubElement(case, "error", message=first, type=type(error).__name__)
    problem.text = str(error)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def to_html(
    target: str,
    variant: str | None,
    lab: str,
    verdicts: Sequence[Verdict],
    seconds: float,
    frames: Mapping[str, Sequence[Frame]] | None = None,
) -> str:
    """The self-contained HTML report (netlab.report_html) of a run of TARGET's checks:
    the lab and its topology are read from TARGET's lab file (no kernel reads); `frames`,
    each check's capture, are decoded for the failed ones."""
    import os
    import time

    from netlab import __version__
    from netlab.graph import build_graph, load_lab_and_layout, render_svg
    from netlab.probes.live import VXLAN_PORTS, frame_line
    from netlab.report_html import ReportRun, render_html

    model, layout = load_lab_and_layout(target, variant)
    svg, note = None, ""
    try:
        svg = render_svg(build_graph(model, layout), inline=True)
    except NetlabError as e:  # the verdicts stand; only the drawing is missing
        note = f"No topology drawing: {e}"
    run = ReportRun(
        lab=lab,
        seconds=seconds,
        kernel=os.uname().release,
        netlab=__version__,
        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    failed = {v.name for v in verdicts if not v.passed}
    packets = {
        name: [frame_line(f, "", VXLAN_PORTS) for f in got] for name, got in (frames or {}).items() if name in failed
    }
    return render_html(run, verdicts, model, svg, note, packets)
