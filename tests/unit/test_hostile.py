"""Hostile lab files are refused within bounds: each runs `netlab validate` in a child
process limited to 256 MiB of address space and 5 s of CPU, and must exit 2 with exactly
the golden message — not a MemoryError, a crash, a hang or the limits.

The bad labs named NNN-hostile-* live with the other goldens in tests/golden/bad (and so
also run in-process there); the inputs too big or too odd to commit (a 50 MB file, a list
nested 100 000 deep, a FIFO) are written here, in a temporary directory, and their
expected output is in tests/golden/hostile/NAME.err. Regenerate like the other goldens:

    NETLAB_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/test_hostile.py
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
HOSTILE_BAD = sorted((GOLDEN / "bad").glob("*-hostile-*.yaml"))
REGEN = os.environ.get("NETLAB_REGEN_GOLDEN") == "1"

MEMORY = 256 * 1024 * 1024  # address space, which counts more than what is touched
CPU_SECONDS = 5  # python's start and netlab's imports take about a second of it


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def _validate(file: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "validate", file],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_limits,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    # The limits were not what stopped it: SIGXCPU/SIGKILL for CPU, MemoryError or a
    # failed allocation for memory, a signal for a crash in the YAML composer.
    assert proc.returncode >= 0, f"killed by {signal.Signals(-proc.returncode).name}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    return proc


def _check(golden: Path, proc: subprocess.CompletedProcess[str]) -> None:
    if REGEN:
        golden.write_text(proc.stderr, encoding="utf-8")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == golden.read_text(encoding="utf-8")
    assert proc.stdout == ""


@pytest.mark.parametrize("path", HOSTILE_BAD, ids=[p.stem for p in HOSTILE_BAD])
def test_committed_hostile_lab(path: Path) -> None:
    proc = _validate(path.relative_to(REPO).as_posix(), REPO)
    _check(path.with_suffix(".err"), proc)


def _big_file(dir: Path) -> None:
    """50 MB: refused by its size before a byte of it is read."""
    with open(dir / "lab.yaml", "wb") as f:
        f.write(b"name: big\nnodes:\n  pod1: {}\n")
        f.write(b"# padding\n" * (5 * 1024 * 1024))


def _deep_list(dir: Path) -> None:
    """A list nested 100 000 deep crashed libyaml's composer (exit 139)."""
    depth = 100_000
    (dir / "lab.yaml").write_text("name: deep\nnodes:\n  pod1:\n    exec: " + "[" * depth + "]" * depth + "\n")


def _deep_block_list(dir: Path) -> None:
    """The same in block style: `- - - …` nests a level per two characters."""
    (dir / "lab.yaml").write_text("name: deep\nnodes:\n  pod1:\n    exec:\n      " + "- " * 100_000 + "x\n")


def _deep_mapping(dir: Path) -> None:
    """A mapping 3000 deep was a RecursionError traceback."""
    depth = 3000
    (dir / "lab.yaml").write_text("name: deep\nnodes:\n  pod1: " + "{a: " * depth + "1" + "}" * depth + "\n")


def _fifo(dir: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: never, here."""
    os.mkfifo(dir / "rules.nft")
    (dir / "lab.yaml").write_text("name: fifo\nnodes:\n  pod1:\n    nftables:\n      - file: rules.nft\n")


def _fifo_lab(dir: Path) -> None:
    os.mkfifo(dir / "lab.yaml")


def _big_ruleset(dir: Path) -> None:
    with open(dir / "rules.nft", "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MB that take no disk
    (dir / "lab.yaml").write_text("name: big\nnodes:\n  pod1:\n    nftables:\n      - file: rules.nft\n")


def _many_values(dir: Path) -> None:
    """Small enough in bytes, but more values than any lab: `[0,0,0,…]`."""
    (dir / "lab.yaml").write_text("name: many\nnodes:\n  pod1:\n    exec: [[" + "0," * 400_000 + "0]]\n")


def _bridge_1024_ports(dir: Path) -> None:
    """The kernel numbers a bridge's ports 1-1023; the 1024th was EXFULL after minutes of `up`."""
    lines = ["name: ports", "nodes:", "  host:", "    links:", "      br0: {kind: bridge}"]
    lines += [f"      p{i}: {{peer: 'pod{i}:eth0', master: br0}}" for i in range(1024)]
    lines += [f"  pod{i}: {{}}" for i in range(1024)]
    (dir / "lab.yaml").write_text("\n".join(lines) + "\n")


GENERATED: dict[str, Callable[[Path], None]] = {
    "bridge-1024-ports": _bridge_1024_ports,
    "big-file-50mb": _big_file,
    "deep-list-100000": _deep_list,
    "deep-block-list-100000": _deep_block_list,
    "deep-mapping-3000": _deep_mapping,
    "file-fifo": _fifo,
    "lab-file-fifo": _fifo_lab,
    "file-64mb": _big_ruleset,
    "many-values": _many_values,
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_hostile_lab(name: str, tmp_path: Path) -> None:
    GENERATED[name](tmp_path)
    proc = _validate("lab.yaml", tmp_path)
    _check(GOLDEN / "hostile" / f"{name}.err", proc)


def test_every_hostile_golden_has_a_case() -> None:
    orphans = {p.stem for p in (GOLDEN / "hostile").glob("*.err")} - set(GENERATED)
    assert not orphans, f".err files without a case: {sorted(orphans)}"
    assert len(HOSTILE_BAD) >= 8


def test_a_flood_of_schema_errors_is_cut_short(tmp_path: Path) -> None:
    """50 000 wrong values within the limits: the first 1000 become problems, 200 are shown."""
    (tmp_path / "lab.yaml").write_text("name: many\nnodes:\n  pod1:\n    exec: [[" + "0," * 50_000 + "0]]\n")
    proc = _validate("lab.yaml", tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert lines[0] == "1001 problems in the lab:"
    assert lines[1] == "  lab.yaml:1: … and 49001 more problems of field types and keys (netlab stops after 1000)"
    assert lines[2] == (
        "  lab.yaml:4: nodes.pod1.exec[0][0]: expected a string, got 0; YAML reads an unquoted 0 "
        "as a number: put it in quotes, e.g. '0'"
    )
    assert lines[-1] == "  … and 801 more (only the first 200 are shown)"
    assert len(lines) == 1 + 200 + 1
