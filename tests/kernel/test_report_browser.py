"""The HTML report in a real browser: `netlab check --up LAB --html` on a real lab with one
passing and one failing check, opened in Debian's headless Chromium (the DOM it builds,
and a screenshot), as a reader would open it.

Chromium runs bounded (a timeout, then its process group is killed by the PID this test
started), with its profile in a temporary directory that is removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.kernel.conftest import LabFactory, NetlabCli

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or shutil.which("dot") is None,
    reason="needs Debian's chromium and Graphviz (scripts/setup installs both)",
)
FAILING = "<blocked> port 7070"  # a name a careless page would turn into a tag

LAB = {
    "nodes": {
        "client": {"links": {"eth0": {"peer": "server:eth0", "addresses": ["10.7.0.2/24"]}}},
        "server": {
            "serve": ["tcp/8080"],
            "links": {"eth0": {"addresses": ["10.7.0.1/24"]}},
            "nftables": [
                "table inet guard {\n  chain input {\n    type filter hook input priority 0;\n"
                "    tcp dport 7070 drop\n  }\n}\n"
            ],
        },
    },
    "checks": [
        {"name": "client reaches the server", "probe": {"from": "client", "to": "server:8080"}},
        {
            "name": FAILING,
            "description": "the guard table drops it",
            "probe": {"from": "client", "to": "server:7070", "timeout": 0.3},
        },
    ],
}


def chromium(*args: str, timeout: float = 60) -> str:
    """Headless Chromium's stdout; its own session, killed by its PID's group on timeout."""
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="netlab-report-chromium-")
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, errors = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium {' '.join(args)} did not finish in {timeout} s")
    finally:
        _reap_group(proc.pid)
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, errors
    return out


def _reap_group(pgid: int) -> None:
    """Chromium's helpers (zygote, GPU process) are in the session it started: end any left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Dom(HTMLParser):
    """The text of the DOM, and of each element with a class, and the <svg>'s text."""

    tags: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    svg_text: list[str] = field(default_factory=list)
    _in_svg: int = 0

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_svg += tag == "svg"

    def handle_endtag(self, tag: str) -> None:
        self._in_svg -= tag == "svg"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_svg:
            self.svg_text.append(data)


def png_colours(path: Path) -> int:
    """How many distinct pixel values an 8-bit RGB/RGBA PNG has (Chromium's screenshots)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (size,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body, pos = data[pos + 8 : pos + 8 + size], pos + 12 + size
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format: depth {depth}, colour type {colour}"
    bpp = 3 if colour == 2 else 4
    raw, stride, prev = zlib.decompress(idat), width * bpp, bytes(width * bpp)
    seen: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prev, bpp)
        seen.update(row[i : i + bpp] for i in range(0, stride, bpp * 7))  # every 7th pixel is plenty
        prev = row
    return len(seen)


def _unfilter(kind: int, row: bytearray, prev: bytes, bpp: int) -> bytes:
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(row, prev, strict=True))
    for i in range(len(row)) if kind else ():
        left = row[i - bpp] if i >= bpp else 0
        up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        else:  # 4, Paeth
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
    return bytes(row)


@pytest.fixture
def report(lab_file: LabFactory, netlab_cli: NetlabCli, tmp_path: Path) -> Iterator[tuple[str, Path, bool]]:
    """The lab up, its report written by `netlab check LAB --html` (the lab by name: the
    drawing and rulesets come from the file its state names); the lab_file fixture takes
    it down."""
    lab = lab_file(LAB)
    assert netlab_cli("up", lab).rc == 0
    html = tmp_path / "report.html"
    trace = ["--trace"] if "--trace" in netlab_cli("check", "--help").out else []  # the slot, once it exists
    r = netlab_cli("check", lab.name, "--html", html, *trace)
    assert r.rc == 1, f"rc {r.rc}\n{r.out}\n{r.err}"
    assert f"report: {html}" in r.err
    yield lab.name, html, bool(trace)


def test_report_command_is_check_html(report: tuple[str, Path, bool], netlab_cli: NetlabCli, tmp_path: Path) -> None:
    lab, _, _ = report
    html = tmp_path / "by-report.html"
    r = netlab_cli("report", lab, "--html", html, "--only", "blocked")
    assert r.rc == 1, f"rc {r.rc}\n{r.out}\n{r.err}"  # check's exit code: a check failed
    page = html.read_text()
    assert "&lt;blocked&gt; port 7070" in page and "expected ok, saw timeout" in page
    assert "client reaches the server" not in page  # --only, as check's


def test_report_in_headless_chromium(report: tuple[str, Path, bool], tmp_path: Path) -> None:
    lab, html, traced = report
    dom_text = chromium("--dump-dom", html.as_uri())
    dom = Dom()
    dom.feed(dom_text)
    assert "svg" in dom.tags, "the topology's <svg> is not in the page"
    drawn = " ".join(dom.svg_text)
    assert "client" in drawn and "server" in drawn and "10.7.0.1/24" in drawn, drawn
    assert "blocked" not in dom.tags  # the check's name stayed text
    text = "".join(dom.text)
    assert f"netlab report: lab {lab}" in text
    assert f"**netlab check `{lab}`** ✗ 1 passed, 1 failed" in text

    failed = dom_text[
        dom_text.index('<details class="check failed" open="">') : dom_text.index('<details class="check passed">')
    ]
    assert "&lt;blocked&gt; port 7070" in failed
    assert "Why it failed" in failed and "expected ok, saw timeout" in failed, failed
    assert "Captured packets" in failed and "&gt; 10.7.0.1.7070 tcp" in failed, failed  # the client's SYN
    if traced:  # `check --trace`: the failed check's walk is in its own section
        assert '<div class="trace">' in failed and "Trace" in failed, failed
    assert "tcp dport 7070 drop" in text  # server's ruleset, folded

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars", html.as_uri())
    assert shot.stat().st_size > 10_000
    assert png_colours(shot) > 50, "the screenshot is (nearly) blank"
