"""`netlab check` at scale, without a lab: failures that differ only in addresses, ports
and numbers are told once as a group (each one with --verbose); --failures-only lists
only the ✗ rows; --fail-fast starts nothing after a failure and the rest count as not run
(text, JSON, JUnit); `--watch` runs again on a change of the lab file or an interval."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

from netlab import json_output, report, watch
from netlab.lab.model import Lab
from netlab.probes.checks import LabContext, Verdict, run_checks


def _syn(i: int, j: int) -> Verdict:
    reason = f"expected ok, saw timeout: no answer from 10.244.{j}.5:8080 within 1 s (SYN unanswered)"
    return Verdict(
        name=f"node1-pod{i} reaches node{j}-pod{i}",
        kind="probe",
        passed=False,
        summary=f"tcp 10.244.{j}.5:8080: timeout",
        reasons=[reason],
        evidence=[f"probe: no answer from 10.244.{j}.5:8080"],
    )


VERDICTS = [
    Verdict(name="route to the overlay", kind="route", passed=True, summary="dev flannel.1"),
    *[_syn(i, j) for i in range(1, 4) for j in range(2, 5)],  # 9 the same way
    Verdict(
        name="pod1 is served by pod4",
        kind="probe",
        passed=False,
        summary="refused",
        reasons=["expected ok, saw refused"],
    ),
]


def _text(verdicts: Sequence[Verdict], **options: object) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None, highlight=False, soft_wrap=True)
    report.print_text(console, "scale", verdicts, 1.0, **options)  # type: ignore[arg-type]
    return buf.getvalue()


def test_failures_that_differ_in_addresses_only_are_one_group() -> None:
    groups = report.failure_groups(VERDICTS)
    assert [len(g.checks) for g in groups] == [9, 1]
    assert groups[0].reason == "expected ok, saw timeout: no answer from …:… within … s (SYN unanswered)"
    assert groups[0].checks[0].name == "node1-pod1 reaches node2-pod1"
    v6 = [replace(v, reasons=[f"expected ok, saw refused by [fd00::{i}]:80"]) for i, v in enumerate(VERDICTS[1:4])]
    (group,) = report.failure_groups(v6)
    assert group.reason == "expected ok, saw refused by […]:…"


def test_a_group_is_told_once_with_an_example_and_its_names() -> None:
    text = _text(VERDICTS)
    assert "✗ 9 checks failed the same way, e.g. node1-pod1 reaches node2-pod1:" in text
    assert "    expected ok, saw timeout: no answer from 10.244.2.5:8080 within 1 s (SYN unanswered)" in text
    names = ", ".join(f"node1-pod1 reaches node{j}-pod1" for j in (2, 3, 4))
    assert f"    the 9: {names}, node1-pod2 reaches node2-pod2, node1-pod2 reaches node3-pod2, … and 4 more" in text
    assert text.count("SYN unanswered") == 1
    assert "\n✗ pod1 is served by pod4\n    expected ok, saw refused\n" in text  # alone: told as before
    assert text.rstrip().endswith("lab scale: 1 passed, 10 failed in 1.00 s")


def test_verbose_tells_every_failure_in_full() -> None:
    text = _text(VERDICTS, verbose=True)
    assert "failed the same way" not in text
    assert text.count("(SYN unanswered)") == 9
    assert "\n✗ node1-pod3 reaches node4-pod3\n" in text


def test_two_the_same_way_are_not_a_group() -> None:
    text = _text([_syn(1, 2), _syn(1, 3)])
    assert "failed the same way" not in text and text.count("SYN unanswered") == 2


def test_failures_only_lists_the_failed_rows_and_counts_all() -> None:
    text = _text(VERDICTS, failures_only=True)
    table = [line for line in text.splitlines() if line.startswith(("✓ ", "✗  "))]
    assert len(table) == 10 and not any(line.startswith("✓") for line in table)
    assert "route to the overlay" not in text
    assert "lab scale: 1 passed, 10 failed" in text
    assert _text(VERDICTS[:1], failures_only=True).strip() == "lab scale: 1 passed, 0 failed in 1.00 s"


def test_not_run_checks_are_counted_in_text_json_and_junit() -> None:
    assert "lab scale: 1 passed, 10 failed, 2 not run (--fail-fast) in" in _text(VERDICTS, not_run=["x", "y"])
    doc = json_output.document("check", report.to_json("scale", VERDICTS, 1.0, ["x", "y"]))
    Draft202012Validator(json_output.schema("check")).validate(doc)
    assert doc["not_run"] == ["x", "y"]
    assert [(g["count"], g["checks"][0]) for g in doc["failure_groups"]] == [
        (9, "node1-pod1 reaches node2-pod1"),
        (1, "pod1 is served by pod4"),
    ]
    suite = ET.fromstring(report.to_junit("scale", VERDICTS, 1.0, ["x", "y"])).find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("13", "2", "10")
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["x", "y"]


def test_fail_fast_starts_no_check_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab.probes import checks as runner

    lab = Lab.model_validate(
        {
            "name": "ff",
            "nodes": {"a": {}},
            "checks": [
                {"name": f"{'bad' if i == 1 else 'good'} {i}", "route": {"on": "a", "get": "10.0.0.1"}, "expect": {}}
                for i in range(6)
            ],
        }
    )
    ran: list[str] = []

    def judged(_ctx: LabContext, check: object) -> Verdict:
        name = str(getattr(check, "name", ""))
        ran.append(name)
        return Verdict(name=name, kind="route", passed=not name.startswith("bad"), summary="")

    monkeypatch.setattr(runner, "run_check", judged)
    ctx = LabContext(lab, {"a": "ff.a"})
    verdicts = run_checks(ctx, workers=1, fail_fast=True)
    assert [v.name for v in verdicts] == ["good 0", "bad 1"] and ran == ["good 0", "bad 1"]
    ran.clear()
    assert len(run_checks(ctx, workers=1)) == 6 and len(ran) == 6


def test_the_watch_line_says_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.strftime", lambda _fmt: "12:00:00")
    before = [Verdict(name="a", kind="probe", passed=True, summary=""), VERDICTS[-1]]
    after = [Verdict(name="a", kind="probe", passed=False, summary=""), VERDICTS[0]]
    line = report.watch_line("lab", before, after, 0.5)
    assert line == "12:00:00 lab lab: 1 passed, 1 failed in 0.50 s; now failing: a"
    line = report.watch_line("lab", after, before, 0.5)
    assert line == "12:00:00 lab lab: 1 passed, 1 failed in 0.50 s; now failing: pod1 is served by pod4; now passing: a"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.on_sleep: list[object] = []

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep:
            action = self.on_sleep.pop(0)
            if callable(action):
                action()

    def __call__(self) -> float:
        return self.now


def test_watch_runs_at_once_then_on_each_change_once_it_settles(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: x\n")
    clock = _Clock()
    runs = watch.changes(watch.FileWatch(str(lab)), None, sleep=clock.sleep, clock=clock)
    next(runs)
    assert clock.now == 0
    clock.on_sleep = [None, None, lambda: lab.write_text("name: x  # edited\n")]
    next(runs)
    assert clock.now == pytest.approx(4 * watch.POLL)  # three looks, the change, one more look: settled


def test_watch_with_an_interval_runs_when_it_is_due(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: x\n")
    clock = _Clock()
    runs = watch.changes(watch.FileWatch(str(lab)), 2.0, sleep=clock.sleep, clock=clock)
    next(runs)
    next(runs)
    assert clock.now == pytest.approx(2.0)


def test_watch_of_a_lab_that_is_not_up_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETLAB_STATE_DIR", str(tmp_path))
    with pytest.raises(Exception, match=r"lab web-broken is not up; `netlab up FILE` first"):
        watch.lab_file_of("web", "broken")
    assert watch.lab_file_of("labs/x.yaml", None) == "labs/x.yaml"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "--json"], "Missing argument 'TARGET'."),
        (["check", "--json", "--nope", "x"], "No such option '--nope'. Did you mean '--up'?"),
        (["status", "--json", "--variant"], "Option '--variant' requires an argument."),
        (["check", "x", "--json", "--watch", "--up"], "--watch re-runs the checks of a lab that is up"),
        (["check", "x", "--json", "--interval", "3"], "--interval goes with --watch"),
    ],
)
def test_a_usage_error_with_json_is_one_error_document(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from netlab.cli import _run

    assert _run(argv) == 2
    doc = json.loads(capsys.readouterr().out)
    Draft202012Validator(json_output.schema(argv[0])).validate(doc)
    assert doc["error"]["code"] == 2 and doc["error"]["message"].startswith(message)


def test_an_unwritable_report_is_refused_before_the_checks_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from netlab.cli import _run

    bad = tmp_path / "no-such-dir" / "report.html"
    assert _run(["check", "docker-bridge", "--json", "--html", str(bad)]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # one document: the error
    assert doc["error"]["message"] == f"--html {bad}: no directory {bad.parent} to write the report in"
    assert captured.err.count("netlab: ") == 1


def test_tsv_keeps_each_row_on_one_line_with_its_columns() -> None:
    from netlab.rows import tsv

    text = tsv(("a", "b"), [["x\ty", "line 1\nline 2"], ["", "z"]])
    assert text == "a\tb\nx y\tline 1 line 2\n\tz\n"
    rows = report.rows(VERDICTS[:2], failures_only=True)
    assert rows == [["fail", "node1-pod1 reaches node2-pod1", "tcp 10.244.2.5:8080: timeout", "1", "0.000"]]
