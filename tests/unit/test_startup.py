"""What every command that loads a lab pays before reading it (issues 19 and 21): guards
for the start-up work taken out, so it does not come back unnoticed. Speed itself is
measured by bench/ (bench/README.md), not here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import netlab

MODEL_MODULES = ["model", "checks", "values", "ipvs", "policy", "ipset", "netem"]


def test_model_modules_have_no_string_annotations() -> None:
    # With `from __future__ import annotations`, pydantic evaluates every field's annotation
    # from its string (a compile and an eval each, ~350 of them): ~0.01 s of every command.
    lab = Path(netlab.__file__).parent / "lab"
    for name in MODEL_MODULES:
        tree = ast.parse((lab / f"{name}.py").read_text())
        futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
        assert not futures, f"netlab/lab/{name}.py: pydantic would evaluate its annotations from strings"


def test_command_looks_up_no_pydantic_plugins(tmp_path: Path) -> None:
    # `up --dry-run` loads the pipeline as `up` does; importlib.metadata comes only with
    # pydantic's plugin lookup (every installed distribution's entry points read).
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: startup\nnodes:\n  a: {}\n")
    code = (
        "import sys, runpy; sys.argv = ['netlab', 'up', '--dry-run', sys.argv[1]]; "
        "import atexit; atexit.register(lambda: print('importlib.metadata' in sys.modules, file=sys.stderr)); "
        "runpy.run_module('netlab.cli', run_name='__main__')"
    )
    p = subprocess.run([sys.executable, "-c", code, str(lab)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "ip netns add startup.a" in p.stdout
    assert p.stderr.strip().endswith("False"), p.stderr
