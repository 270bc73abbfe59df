"""What validates of a lab with schema errors still has its cross-references checked
(lab.parse.salvage + load): paths stay the file's when list entries are cut, and what may
only follow from a cut is not reported."""

from __future__ import annotations

import pytest

from netlab.errors import LabError
from netlab.lab.parse import Salvage
from netlab.load import load_lab_text

BASE = """\
name: s
nodes:
  a:
    serve: [tcp/80]
    links:
      eth0: {peer: "b:eth0", addresses: [10.0.0.1/24]}
  b:
    links:
      eth0: {addresses: [10.0.0.2/24]}
checks:
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(LabError) as info:
        load_lab_text(text, "lab.yaml")
    return [str(p) for p in info.value.problems]


def test_a_check_after_a_cut_one_keeps_its_index_and_line() -> None:
    text = BASE + (
        "  - name: no expect\n"  # line 11: a route check needs expect: this entry is cut
        "    route: {on: a, get: 10.0.0.2}\n"
        "  - name: fine\n"
        "    probe: {from: b, to: a, port: 80}\n"
        "  - name: typo\n"  # line 15
        "    probe: {from: b, to: aa, port: 80}\n"
    )
    assert _problems(text) == [
        "lab.yaml:11: checks[0].expect: required key 'expect' is missing",
        "lab.yaml:16: checks[2].probe.to: 'aa' is neither an address nor a node of this lab; did you mean 'a'?",
    ]


def test_no_complaint_about_a_node_that_failed_validation() -> None:
    text = BASE.replace("serve: [tcp/80]", "serve: [tcp/80, nope]") + (
        "  - name: served by a\n"
        "    probe: {from: b, to: a, port: 80}\n"
        "    expect: {served_by: a}\n"
        "  - name: from nowhere\n"
        "    probe: {from: c, to: b, port: 80}\n"
    )
    problems = _problems(text)
    assert len(problems) == 2, problems
    assert problems[0].startswith("lab.yaml:4: nodes.a.serve[1]: ")
    assert problems[1] == "lab.yaml:15: checks[1].probe.from: no node 'c' in this lab (nodes: a, b)"


def test_a_top_level_typo_stops_the_cross_references() -> None:
    """`node:` for `nodes:` leaves nothing to refer to: only the typo is reported."""
    problems = _problems(BASE.replace("nodes:", "node:", 1) + "  - {name: x, probe: {from: zz, to: a, port: 80}}\n")
    assert problems == [
        "lab.yaml:2: node: unknown key 'node'; did you mean 'nodes'? (allowed here: checks, cluster, "
        "description, name, nodes, requires, tables)"
    ]


def test_original_paths_skip_removed_entries() -> None:
    s = Salvage(None, removed={("checks",): [0, 2]})
    assert s.original(("checks", 0, "probe")) == ("checks", 1, "probe")
    assert s.original(("checks", 1)) == ("checks", 3)
    assert s.original(("nodes", "a", "routes", 0)) == ("nodes", "a", "routes", 0)
