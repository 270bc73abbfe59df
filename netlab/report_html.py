"""A check run → one self-contained HTML page (`netlab check --html`, `netlab report`).

The page needs nothing but itself: CSS inline, the topology as an inline <svg>, no
script and no external reference; sections fold with <details>. It holds a summary to
paste into a pull request, the topology, every check with its verdict, reasons,
evidence and (when the verdict carries one) its trace, and each node's rulesets as
the explicit lab spells them. Pure: the caller gives the verdicts, the lab and the
SVG; every text that comes from the lab or the kernel is escaped here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from netlab.lab.model import Lab, Node
from netlab.probes.checks import Verdict

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1150px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.meta { color: #59636e; margin: 0 0 14px; }
.tally { display: inline-block; font-weight: 600; padding: 2px 10px; border-radius: 12px; margin-right: 6px; }
.tally.pass { background: #dafbe1; color: #116329; } .tally.fail { background: #ffebe9; color: #a40e26; }
pre { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px; margin: 6px 0;
      font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap; overflow-wrap: anywhere; }
.graph { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; overflow-x: auto; }
.graph svg { display: block; margin: 0 auto; }
.graph.fit svg { max-width: 100%; height: auto; }
details.check { background: #fff; border: 1px solid #d0d7de; border-left: 6px solid #1a7f37; border-radius: 6px;
                margin: 8px 0; padding: 0 12px; }
details.check.failed { border-left-color: #cf222e; }
details > summary { cursor: pointer; padding: 8px 0; list-style-position: inside; }
details.check > summary .mark { font-weight: 700; margin-right: 6px; }
details.check.passed > summary .mark { color: #1a7f37; } details.check.failed > summary .mark { color: #cf222e; }
summary .name { font-weight: 600; }
summary .observed { color: #59636e; margin-left: 8px; }
.section { font-weight: 600; margin: 8px 0 2px; }
ul.reasons { margin: 4px 0 8px; padding-left: 22px; color: #a40e26; }
.description { color: #59636e; margin: 2px 0 6px; }
details.node { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 6px 0; padding: 0 12px; }
.muted { color: #59636e; }
"""
PACKET_LINES = 20  # of a failed check's capture: the rest is in `check --pcap`'s file
FIT_WIDTH = 1600  # points (Graphviz's unit): at most about half size on a laptop's page


@dataclass(frozen=True)
class ReportRun:
    """What the page shows about the run itself (the verdicts come beside it)."""

    lab: str  # the lab's name
    seconds: float
    kernel: str  # `uname -r`
    netlab: str  # netlab's version
    when: str  # when the checks ran, as people read it (UTC)


def summary_text(run: ReportRun, verdicts: Sequence[Verdict]) -> str:
    """Markdown to paste into a pull request: the tally, then one line per failed check."""
    failed = [v for v in verdicts if not v.passed]
    passed = len(verdicts) - len(failed)
    mark = "✗" if failed else "✓"
    lines = [
        f"**netlab check `{run.lab}`** {mark} {passed} passed, {len(failed)} failed "
        f"in {run.seconds:.2f} s · kernel {run.kernel} · netlab {run.netlab} · {run.when}"
    ]
    lines += [f"- ✗ `{v.name}`: {'; '.join(v.reasons) or v.summary}" for v in failed]
    return "\n".join(lines)


def render_html(
    run: ReportRun,
    verdicts: Sequence[Verdict],
    lab: Lab | None,
    svg: str | None,
    graph_note: str = "",
    packets: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The page. `svg` is the topology's bare <svg> element (graph.render_svg(inline=True),
    trusted: Graphviz escapes what it draws); without it, `graph_note` says why. `packets`:
    a check's captured frames as lines (netlab capture's), shown up to PACKET_LINES."""
    failed = sum(not v.passed for v in verdicts)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>netlab report: {escape(run.lab)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>netlab report: lab {escape(run.lab)}</h1>",
        f'<p class="meta">{escape(run.when)} · kernel {escape(run.kernel)} · netlab {escape(run.netlab)} · '
        f"checks ran in {run.seconds:.2f} s</p>",
        f'<p><span class="tally pass">{len(verdicts) - failed} passed</span>'
        f'<span class="tally {"fail" if failed else "pass"}">{failed} failed</span></p>',
        '<h2 id="summary">Summary for a pull request</h2>',
        f'<pre class="summary">{escape(summary_text(run, verdicts))}</pre>',
        '<h2 id="topology">Topology</h2>',
        _graph(svg, graph_note),
        '<h2 id="checks">Checks</h2>',
    ]
    if not verdicts:
        parts.append('<p class="muted">The lab has no checks.</p>')
    # Failed checks first (open), then the passed ones (folded), each in the lab's order.
    parts += [_check(v, (packets or {}).get(v.name, ())) for v in sorted(verdicts, key=lambda v: v.passed)]
    if lab is not None:
        parts.append('<h2 id="rulesets">Rulesets</h2>')
        nodes = [_node_rulesets(name, node) for name, node in lab.nodes.items()]
        parts += [n for n in nodes if n] or ['<p class="muted">No node of the lab has a ruleset.</p>']
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _graph(svg: str | None, note: str) -> str:
    """A drawing up to FIT_WIDTH wide shrinks to the page; a wider one (a cluster lab)
    keeps its size and scrolls sideways, or its text would be too small to read."""
    if not svg:
        return f'<p class="muted">{escape(note or "No topology drawing.")}</p>'
    width = re.match(r'<svg width="([0-9.]+)pt"', svg)
    fits = width is None or float(width.group(1)) <= FIT_WIDTH
    return f'<div class="graph{" fit" if fits else ""}">{svg}</div>'


def _check(v: Verdict, packets: Sequence[str]) -> str:
    state = "passed" if v.passed else "failed"
    tries = f" ({v.attempts} attempts)" if v.attempts > 1 else ""
    head = (
        f'<details class="check {state}"{"" if v.passed else " open"}><summary>'
        f'<span class="mark">{"✓" if v.passed else "✗"}</span><span class="name">{escape(v.name)}</span>'
        f'<span class="observed">{escape(v.kind)} · {escape(v.summary)} · {v.seconds:.2f} s{tries}</span>'
        "</summary>"
    )
    body = [f'<p class="description">{escape(v.description)}</p>'] if v.description else []
    if v.reasons:
        body.append(
            '<div class="section">Why it failed</div><ul class="reasons">'
            + "".join(f"<li>{escape(r)}</li>" for r in v.reasons)
            + "</ul>"
        )
    body += _pre("Evidence", v.evidence)
    if packets:
        more = len(packets) - PACKET_LINES
        shown = [
            *packets[:PACKET_LINES],
            *([f"… {more} more (netlab check --pcap DIR keeps them all)"] if more > 0 else []),
        ]
        body += _pre(f"Captured packets ({len(packets)}: all the capture interface saw while the check ran)", shown)
    trace = v.walk()
    if trace:
        body += [f'<div class="trace">{"".join(_pre("Trace", trace))}</div>']
    if v.probes:
        body.append(
            f"<details><summary>Probe results ({len(v.probes)})</summary>"
            f"<pre>{escape(json.dumps(v.probes, indent=2, default=str))}</pre></details>"
        )
    return head + "".join(body) + "</details>"


def _pre(title: str, lines: Sequence[str]) -> list[str]:
    if not lines:
        return []
    return [f'<div class="section">{escape(title)}</div><pre>{escape(chr(10).join(lines))}</pre>']


def _node_rulesets(name: str, node: Node) -> str:
    texts = list(_rulesets(node))
    if not texts:
        return ""
    body = "".join(f'<div class="section">{escape(title)}</div><pre>{escape(text)}</pre>' for title, text in texts)
    return (
        f'<details class="node"><summary>{escape(name)} <span class="muted">({len(texts)})</span></summary>'
        f"{body}</details>"
    )


def _rulesets(node: Node) -> Iterator[tuple[str, str]]:
    for r in node.nftables:
        if r.ruleset:
            yield "nftables", r.ruleset.rstrip()
        elif r.json_ is not None:
            yield "nftables (JSON)", json.dumps(r.json_, indent=2)
        else:
            yield "nftables", f"(from file {r.file})"
    for d in node.iptables:
        what = f"iptables-save (IPv{d.family}{', --noflush' if d.noflush else ''})"
        yield what, (d.save or f"(from file {d.file})").rstrip()
