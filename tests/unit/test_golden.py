"""Golden tests: every bad lab gives exactly the error text in its .err file; every good lab
gives exactly the plan in its .plan file; every shipped lab under labs/ loads and plans.

Regenerate after an intended change of messages or plans with

    NETLAB_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py

and then read every changed .err/.plan file (`git diff tests/golden`) before committing:
the files are the spec of what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netlab.cli import cli
from netlab.errors import LabError
from netlab.lab import source
from netlab.load import load_lab, load_variants
from netlab.plan.build import build_plan

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
BAD = sorted((GOLDEN / "bad").glob("*.yaml"))
GOOD = sorted((GOLDEN / "good").glob("*.yaml"))
LABS = sorted((REPO / "labs").glob("*.yaml"))
REGEN = os.environ.get("NETLAB_REGEN_GOLDEN") == "1"


def _rel(path: Path) -> str:
    """The path as messages show it: relative to the repo root, which tests run from."""
    return path.relative_to(REPO).as_posix()


def _check_golden(golden: Path, actual: str) -> None:
    if REGEN:
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"{_rel(golden)} is missing; run with NETLAB_REGEN_GOLDEN=1 and review it"
    assert actual == golden.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _multi(path: Path) -> bool:
    """NN-multi-*.yaml hold several mistakes on purpose."""
    return path.stem.split("-", 1)[1].startswith("multi-")


def _lab_error(path: Path) -> LabError:
    """What `validate` reports: every problem of the file, its variants' too."""
    with pytest.raises(LabError) as info:
        load_variants(_rel(path))
    return info.value


# ---------------------------------------------------------------- bad labs


def test_enough_bad_labs() -> None:
    assert len(BAD) >= 30
    orphans = {p.stem for p in (GOLDEN / "bad").glob("*.err")} - {p.stem for p in BAD}
    assert not orphans, f".err files without a lab: {sorted(orphans)}"
    assert len([p for p in BAD if _multi(p)]) >= 2


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_lab_message(path: Path) -> None:
    err = _lab_error(path)
    _check_golden(path.with_suffix(".err"), str(err) + "\n")
    for problem in err.problems:
        assert problem.file == _rel(path)
        assert problem.line > 0, f"{problem} has no line number"
        assert "\x1b" not in str(problem)
    if _multi(path):  # these exist to show that one run reports every mistake
        assert len(err.problems) >= 2


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_lab_same_with_pure_python_yaml(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libyaml and PyYAML word syntax errors differently; the user sees one message either way
    (and a machine without libyaml must pass these goldens too)."""
    expected = str(_lab_error(path))
    monkeypatch.setattr(source, "_COMPOSER", yaml.SafeLoader)
    assert str(_lab_error(path)) == expected


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_validate_command_reports_bad_lab(path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", _rel(path)], standalone_mode=False)
    # standalone_mode=False: the command's return value is the exit code `netlab` (main)
    # exits with; click's standalone mode would drop it (see test_validate_exit_code).
    assert result.exception is None, result.output
    assert result.return_value == 2
    assert result.output == path.with_suffix(".err").read_text(encoding="utf-8")


def test_validate_exit_code() -> None:
    """The real entry point exits 2 and prints every file's problems, in one run."""
    files = [_rel(p) for p in BAD[:5]]
    proc = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "validate", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    for path in BAD[:5]:
        assert path.with_suffix(".err").read_text(encoding="utf-8") in proc.stderr


# ---------------------------------------------------------------- good labs


def test_enough_good_labs() -> None:
    assert len(GOOD) >= 4


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_lab_plan(path: Path) -> None:
    plan = build_plan(load_lab(_rel(path)))
    _check_golden(path.with_suffix(".plan"), plan.render())


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_lab_validates(path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", _rel(path)], standalone_mode=False)
    assert result.exception is None, result.output
    assert result.return_value == 0, result.output


# ---------------------------------------------------------------- shipped labs


@pytest.mark.parametrize("path", LABS, ids=[p.stem for p in LABS])
def test_shipped_lab_loads_and_plans_deterministically(path: Path) -> None:
    first = build_plan(load_lab(_rel(path)))
    second = build_plan(load_lab(_rel(path)))
    assert first.render() == second.render()
    assert first.fingerprint == second.fingerprint
    result = CliRunner().invoke(cli, ["validate", _rel(path)], standalone_mode=False)
    assert result.return_value == 0, result.output
