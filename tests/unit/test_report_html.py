"""The HTML report (netlab.report_html, `netlab check --html`): escaping, failed checks'
reasons and traces, the embedded topology, no external reference. The page in a real
browser: tests/kernel/test_report_browser.py."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from netlab.graph import build_graph, render_svg
from netlab.lab.model import Lab
from netlab.load import load_lab_text
from netlab.observations import TraceEvent
from netlab.probes.checks import Verdict
from netlab.probes.flow import ProbeResult
from netlab.probes.trace import Trace
from netlab.report import to_html
from netlab.report_html import ReportRun, render_html, summary_text

RUN = ReportRun(lab="demo", seconds=1.234, kernel="6.1.0-test", netlab="0.1.0", when="2026-12-04 18:00:00 UTC")
HOSTILE = "<script>alert(1)</script>"

LAB = """
name: demo
nodes:
  client:
    links:
      eth0: {peer: router:eth1, addresses: [10.1.0.2/24]}
  router:
    links:
      eth1: {addresses: [10.1.0.1/24]}
    nftables:
      - |
        table inet filter {
          chain forward { type filter hook forward priority 0; policy drop; comment "<b>drop & log</b>"; }
        }
    iptables: |
      *filter
      :INPUT ACCEPT [0:0]
      -A INPUT -m comment --comment "<img src=x>" -j DROP
      COMMIT
"""


def _lab() -> Lab:
    return load_lab_text(LAB)


def _verdicts() -> list[Verdict]:
    return [
        Verdict(name="client reaches router", kind="probe", passed=True, summary="tcp connected in 2 ms"),
        Verdict(
            name=HOSTILE,
            kind="probe",
            passed=False,
            summary="timeout after 1.0 s",
            reasons=["expected connected, got timeout", "dropped by <chain forward> policy"],
            evidence=["conntrack: tcp 10.1.0.2:40000 → 10.1.0.1:80 [UNREPLIED]", "route: 10.1.0.1 dev eth0"],
            description="the <forward> policy drops it",
            probes=[{"outcome": "timeout"}],
        ),
    ]


@dataclass
class _Page(HTMLParser):
    """What the page is made of: its text and every src/href and tag."""

    text: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_user_text_is_escaped_everywhere() -> None:
    html = render_html(RUN, _verdicts(), _lab(), None, "no drawing")
    page = _parse(html)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    assert HOSTILE not in html
    text = "".join(page.text)
    assert HOSTILE in text  # shown as text, as the user named it
    assert '"<img src=x>"' in text and '"<b>drop & log</b>"' in text
    assert "the <forward> policy drops it" in text


def test_failed_check_is_open_with_reasons_and_evidence() -> None:
    html = render_html(RUN, _verdicts(), _lab(), None)
    start = html.index('<details class="check failed" open>')
    block = html[start : html.index('<details class="check passed">')]
    assert "Why it failed" in block
    assert "expected connected, got timeout" in block
    assert "dropped by &lt;chain forward&gt; policy" in block
    assert "conntrack: tcp 10.1.0.2:40000 → 10.1.0.1:80 [UNREPLIED]" in block
    assert '<details class="check passed">' in html  # a passed check is folded
    # failed first, whatever the lab's order
    assert html.index("check failed") < html.index("check passed")


def test_a_failed_checks_trace_shows_its_walk() -> None:
    drop = TraceEvent(
        ns="demo.router",
        id=1,
        type="rule",
        family="inet",
        table="filter",
        chain="forward",
        handle=4,
        verdict="drop",
        target=None,
        src="10.1.0.2",
        dst="10.1.0.1",
        iif="eth1",
        oif=None,
        rule='ip daddr 10.1.0.1 drop comment "<here>"',
    )
    probe = ProbeResult("timeout", "tcp", "10.1.0.2", 40000, "10.1.0.1", 80, None, None, None, None, "no answer", None)
    trace = Trace("client", "tcp", "10.1.0.1", 80, (probe,), (drop,), {"demo.router": "router"})
    v = Verdict(name="traced", kind="probe", passed=False, summary="timeout", reasons=["timeout"], trace=trace)
    html = render_html(RUN, [v], None, None)
    assert '<div class="trace">' in html and "Trace" in html
    assert (
        "inet filter forward: ip daddr 10.1.0.1 drop comment &quot;&lt;here&gt;&quot;  → drop   ✗ dropped here" in html
    )
    assert "died in router: inet filter forward" in html
    assert '<div class="trace">' not in render_html(RUN, _verdicts(), None, None)  # no trace, no section


def test_summary_for_a_pull_request() -> None:
    text = summary_text(RUN, _verdicts())
    first, second = text.splitlines()
    assert first == (
        "**netlab check `demo`** ✗ 1 passed, 1 failed in 1.23 s · kernel 6.1.0-test · netlab 0.1.0 · "
        "2026-12-04 18:00:00 UTC"
    )
    assert second == f"- ✗ `{HOSTILE}`: expected connected, got timeout; dropped by <chain forward> policy"
    assert summary_text(RUN, _verdicts()[:1]).startswith("**netlab check `demo`** ✓ 1 passed, 0 failed")


def test_rulesets_folded_per_node() -> None:
    html = render_html(RUN, [], _lab(), None)
    assert "The lab has no checks." in html
    node = re.search(r'<details class="node"><summary>router .*?</details>', html, re.S)
    assert node, html
    assert "nftables" in node.group(0) and "iptables-save (IPv4)" in node.group(0)
    assert "policy drop" in node.group(0) and "-A INPUT" in node.group(0)
    assert "<summary>client" not in html  # a node without rulesets has no fold


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_embedded_and_nothing_external() -> None:
    lab = _lab()
    svg = render_svg(build_graph(lab), inline=True)
    html = render_html(RUN, _verdicts(), lab, svg)
    page = _parse(html)
    assert "svg" in page.tags
    assert html.index('<div class="graph fit"><svg') > 0  # a small lab's drawing shrinks to the page
    text = "".join(page.text)
    assert "client" in text and "router" in text and "10.1.0.2/24" in text
    assert not [link for link in page.links if re.match(r"\s*(https?:)?//", link)], page.links
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html


def test_to_html_from_a_lab_file(tmp_path: Path) -> None:
    """The CLI's path: the lab read from its file; without Graphviz the page says why."""
    path = tmp_path / "demo.yaml"
    path.write_text(LAB)
    html = to_html(str(path), None, "demo", _verdicts(), 2.0)
    assert "netlab report: lab demo" in html and "iptables-save (IPv4)" in html
    if shutil.which("dot"):
        assert '<div class="graph fit"><svg' in html
    else:
        assert "No topology drawing" in html


def test_a_wide_drawing_keeps_its_size() -> None:
    html = render_html(RUN, [], None, '<svg width="2260pt" height="463pt" viewBox="0 0 2260 463"></svg>')
    assert '<div class="graph"><svg width="2260pt"' in html
    assert '<div class="graph fit"><svg' in render_html(RUN, [], None, '<svg width="773pt" height="200pt"></svg>')


def test_failed_checks_packets_shown_up_to_a_limit() -> None:
    from netlab.report_html import PACKET_LINES

    lines = [f"18:00:00.{i:06d} out 10.1.0.2.40000 > 10.1.0.1.80 tcp <SYN>, length 74" for i in range(25)]
    html = render_html(RUN, _verdicts(), None, None, packets={HOSTILE: lines})
    assert "Captured packets (25:" in html
    assert "10.1.0.1.80 tcp &lt;SYN&gt;" in html and "<SYN>" not in html
    assert f"18:00:00.{PACKET_LINES - 1:06d}" in html and f"18:00:00.{PACKET_LINES:06d}" not in html
    assert f"… {25 - PACKET_LINES} more (netlab check --pcap DIR keeps them all)" in html
