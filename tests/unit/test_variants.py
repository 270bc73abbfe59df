"""Lab variants (`variants:`): merge semantics, names, line numbers of problems in a
variant, unknown variants, and the CLI's --variant, validate and render."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from netlab.cli import cli
from netlab.errors import LabError, Problem, UsageError
from netlab.lab.source import Source
from netlab.lab.variants import apply_variant, variant_diff
from netlab.load import (
    load_lab,
    load_lab_data,
    load_lab_located,
    load_lab_text,
    load_variants,
    load_variants_text,
    variant_data,
)
from netlab.plan.build import build_plan

LAB = """\
name: tiny
description: two nodes and a router
nodes:
  r:
    sysctls: {net.ipv4.ip_forward: 1}
    links:
      eth0: {peer: "a:eth0", addresses: [10.0.1.1/24]}
      eth1: {peer: "b:eth0", addresses: [10.0.2.1/24]}
  a:
    links:
      eth0: {addresses: [10.0.1.2/24]}
    routes:
      - {to: default, via: 10.0.1.1}
  b:
    serve: [tcp/80]
    links:
      eth0: {addresses: [10.0.2.2/24]}
    routes:
      - {to: default, via: 10.0.2.1}
checks:
  - name: a reaches b
    probe: {from: a, to: b, port: 80}
variants:
  no-return:
    description: b has no way back to a
    nodes:
      b: {routes: null}
    checks:
      - name: a cannot reach b
        probe: {from: a, to: b, port: 80, timeout: 0.3}
        expect: {result: timeout}
  mtu:
    nodes:
      a:
        links:
          eth0: {mtu: 1400}
"""


def text_lab(text: str, variant: str | None = None) -> Any:
    return load_lab_text(textwrap.dedent(text), "t.yaml", variant)


def problems(text: str, variant: str | None = None) -> list[Problem]:
    """The problems of one lab of the file (with `variant`), or of all (what validate says)."""
    with pytest.raises(LabError) as info:
        if variant is None:
            load_variants_text(textwrap.dedent(text), "t.yaml")
        else:
            text_lab(text, variant)
    return info.value.problems


def with_variants(variants: str, base: str = LAB) -> str:
    """LAB's base with another `variants:` section."""
    return base[: base.index("variants:")] + textwrap.dedent(variants)


# ---------------------------------------------------------------- merging


def test_base_lab_ignores_the_variants() -> None:
    lab = text_lab(LAB)
    assert lab.name == "tiny" and lab.description == "two nodes and a router"
    assert [c.name for c in lab.checks] == ["a reaches b"]
    assert len(lab.nodes["b"].routes) == 1


def test_variant_is_named_after_lab_and_variant() -> None:
    lab = text_lab(LAB, "no-return")
    assert lab.name == "tiny-no-return"
    assert lab.description == "b has no way back to a"  # a scalar replaces


def test_null_deletes_and_a_list_replaces() -> None:
    lab = text_lab(LAB, "no-return")
    assert lab.nodes["b"].routes == []  # deleted: the default
    assert lab.nodes["b"].serve == ["tcp/80"]  # the rest of b is kept
    assert [c.name for c in lab.checks] == ["a cannot reach b"]  # the checks list is replaced


def test_mappings_merge_key_by_key() -> None:
    lab = text_lab(LAB, "mtu")
    eth0 = lab.nodes["a"].links["eth0"]
    assert eth0.mtu == 1400 and [str(a) for a in eth0.addresses] == ["10.0.1.2/24"]
    assert lab.nodes["a"].routes and lab.description == "two nodes and a router"
    assert [c.name for c in lab.checks] == ["a reaches b"]  # not given: the base's


def test_apply_variant_on_plain_data() -> None:
    base: dict[str, Any] = {
        "name": "x",
        "nodes": {"a": {"sysctls": {"k": 1, "j": 2}, "exec": [["true"]]}},
        "checks": [1, 2],
    }
    merged = apply_variant(
        base,
        "v",
        {"nodes": {"a": {"sysctls": {"k": None, "m": 3}, "exec": [["false"]]}, "b": {"links": {}}}, "checks": []},
    )
    assert merged.data == {
        "name": "x-v",
        "nodes": {"a": {"sysctls": {"j": 2, "m": 3}, "exec": [["false"]]}, "b": {"links": {}}},
        "checks": [],
    }
    assert merged.origins == {
        ("nodes", "a", "sysctls", "m"): ("variants", "v", "nodes", "a", "sysctls", "m"),
        ("nodes", "a", "exec"): ("variants", "v", "nodes", "a", "exec"),
        ("nodes", "b"): ("variants", "v", "nodes", "b"),
        ("checks",): ("variants", "v", "checks"),
    }
    assert base["nodes"]["a"]["sysctls"] == {"k": 1, "j": 2}  # the base data is left alone
    assert not merged.complaints


def test_variant_diff_is_what_merges_back() -> None:
    base = {"name": "x", "nodes": {"a": {"mtu": 1, "keep": [1]}, "b": {"x": {"y": 1}}}, "checks": [1]}
    variant = {"name": "x-v", "nodes": {"a": {"keep": [1], "new": 2}, "b": {}}, "checks": [2], "tables": {"t": 1}}
    diff = variant_diff(base, variant)
    assert diff == {"nodes": {"a": {"mtu": None, "new": 2}, "b": {"x": None}}, "checks": [2], "tables": {"t": 1}}
    assert apply_variant(base, "v", diff).data == variant


def test_a_variant_without_changes_is_the_lab_under_another_name() -> None:
    text = with_variants("variants:\n  same: {}\n  also:\n")
    base, also = text_lab(text), text_lab(text, "also")
    assert also.name == "tiny-also" and text_lab(text, "same").name == "tiny-same"
    assert also.model_copy(update={"name": "tiny"}) == base


def test_load_lab_data_with_a_variant() -> None:
    data = yaml.safe_load(LAB)
    assert load_lab_data(data, variant="no-return").name == "tiny-no-return"
    assert load_lab_data(data).name == "tiny"
    plain = variant_data(data, "no-return")
    assert "variants" not in plain and plain["name"] == "tiny-no-return"
    assert load_lab_data(plain).nodes["b"].routes == []


def test_a_variant_may_change_the_cluster() -> None:
    text = """\
        name: cl
        cluster:
          backend: vxlan
          pod_cidr: 10.244.0.0/16
          nodes: {node1: {}, node2: {}}
          pods: {web: {replicas: 2}}
        variants:
          host-gw:
            cluster: {backend: host-gw}
    """
    base, variant = text_lab(text), text_lab(text, "host-gw")
    assert "flannel.1" in base.nodes["node1"].links
    assert "flannel.1" not in variant.nodes["node1"].links and variant.name == "cl-host-gw"


# ---------------------------------------------------------------- problems and where they are


def test_a_problem_in_a_variant_is_at_its_line_and_written_path() -> None:
    found = problems(
        with_variants("""\
        variants:
          broken:
            nodes:
              a:
                sysctls: {kernel.panic: 1}
    """)
    )
    assert [(p.line, p.path) for p in found] == [(27, 'variants.broken.nodes.a.sysctls["kernel.panic"]')]
    assert "not a network sysctl" in found[0].message


def test_a_bad_key_in_a_variant_says_did_you_mean_at_the_variant() -> None:
    found = problems(
        with_variants("""\
        variants:
          broken:
            nodes:
              a:
                links:
                  eth0: {adresses: [10.0.1.9/24]}
    """)
    )
    assert [(p.line, p.path) for p in found] == [(28, "variants.broken.nodes.a.links.eth0.adresses")]
    assert "did you mean 'addresses'?" in found[0].message


def test_a_problem_the_variant_causes_in_the_base_names_the_variant() -> None:
    found = problems(
        with_variants("""\
        variants:
          no-b:
            nodes: {b: null}
    """)
    )
    assert found, found
    for p in found:
        assert p.message.startswith("in variant no-b: "), p
    # the base's check that names b, at the base's line
    assert any(p.path.startswith("checks[0].probe") and p.line == 22 for p in found), found


def test_problems_of_several_variants_come_together() -> None:
    found = problems(
        with_variants("""\
        variants:
          one:
            nodes: {a: {sysctls: {kernel.x: 1}}}
          two:
            requires: [warp-drive]
    """)
    )
    assert {p.path.split(".")[1] for p in found} == {"one", "two"}


def test_base_problems_are_not_repeated_per_variant() -> None:
    bad_base = LAB.replace("mtu:\n", "mtu2:\n").replace("{to: default, via: 10.0.1.1}", "{to: default, gw: 10.0.1.1}")
    found = problems(bad_base)
    assert [p.path for p in found] == ["nodes.a.routes[0].gw"]


def test_null_deleting_nothing_is_an_error_with_a_suggestion() -> None:
    found = problems(
        with_variants("""\
        variants:
          typo:
            nodes:
              b: {route: null}
    """)
    )
    assert [(p.line, p.path) for p in found] == [(26, "variants.typo.nodes.b.route")]
    assert "the lab has no nodes.b.route; did you mean 'routes'?" in found[0].message


def test_keys_a_variant_cannot_have() -> None:
    found = problems(
        with_variants("""\
        variants:
          v:
            name: other
            variants: {}
            node: {}
    """)
    )
    by_path = {p.path: p.message for p in found}
    assert "cannot set `name:`" in by_path["variants.v.name"] and "tiny-v" in by_path["variants.v.name"]
    assert "do not nest" in by_path["variants.v.variants"]
    assert "did you mean 'nodes'?" in by_path["variants.v.node"]


def test_variant_names() -> None:
    found = problems(
        with_variants("""\
        variants:
          bad.name: {}
          a-much-too-long-variant-name-here: {}
    """)
    )
    by_path = {p.path: p.message for p in found}
    assert "only letters, digits" in by_path['variants["bad.name"]']
    long = by_path["variants.a-much-too-long-variant-name-here"]
    assert "'tiny-a-much-too-long-variant-name-here', 38 characters" in long and "at most 32" in long


@pytest.mark.parametrize("section", ["variants: []", "variants:", "variants: {}", "variants: {v: [1]}"])
def test_the_variants_section_must_be_a_mapping(section: str) -> None:
    found = problems(with_variants(section + "\n"))
    assert len(found) == 1 and found[0].path.startswith("variants"), found
    assert "expected a mapping" in found[0].message


def test_a_variant_file_that_cannot_be_read_is_at_the_variant(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        with_variants("""\
        variants:
          fw:
            nodes:
              r:
                nftables: [{file: missing.nft}]
    """)
    )
    with pytest.raises(LabError) as info:
        load_lab(path, "fw")
    [p] = info.value.problems
    assert (p.line, p.path) == (27, "variants.fw.nodes.r.nftables[0].file") and "cannot read" in p.message
    with pytest.raises(LabError) as every:
        load_variants(path)  # validate's view: the file has a problem
    assert every.value.problems == [p]
    assert load_lab(path).name == "tiny"  # the base lab is not refused for its variant


def test_each_lab_of_the_file_is_refused_only_for_its_own_problems() -> None:
    """`up`/`check --variant X` load lab X alone: variant Y's problems (even in the shape of
    its entry under `variants:`) do not refuse it, nor the base."""
    text = with_variants("""\
        variants:
          ok: {nodes: {a: {links: {eth0: {mtu: 1400}}}}}
          broken:
            nodes: {r: {sysctls: {kernel.panic: 1}}}
          shapeless: [1]
    """)
    assert text_lab(text).name == "tiny"
    assert text_lab(text, "ok").name == "tiny-ok"
    [p] = problems(text, "broken")
    assert p.path == 'variants.broken.nodes.r.sysctls["kernel.panic"]', p
    [q] = problems(text, "shapeless")
    assert q.path == "variants.shapeless" and "expected a mapping" in q.message, q
    assert {x.path for x in problems(text)} == {p.path, q.path}  # validate: both


def test_a_variant_that_breaks_the_kept_base_is_refused_alone_and_named() -> None:
    text = with_variants("""\
        variants:
          no-r: {nodes: {r: null}}
    """)
    assert text_lab(text).name == "tiny"
    found = problems(text, "no-r")
    assert found and all(p.message.startswith("in variant no-r: ") for p in found), found


def test_the_origin_of_a_variant_lab_translates_its_paths(tmp_path: Path) -> None:
    (tmp_path / "r.nft").write_text("table inet t {}\n")
    path = tmp_path / "lab.yaml"
    path.write_text(
        with_variants("""\
        variants:
          fw:
            nodes:
              r:
                nftables: [{file: r.nft}]
    """)
    )
    _, where = load_lab_located(path, "fw")
    assert where.written(("nodes", "r", "nftables", 0)) == ("variants", "fw", "nodes", "r", "nftables", 0)
    assert where.written(("nodes", "a", "links")) == ("nodes", "a", "links")
    assert where.files == {("variants", "fw", "nodes", "r", "nftables", 0): str(tmp_path / "r.nft")}


# ---------------------------------------------------------------- choosing a variant


def test_unknown_variant_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        text_lab(LAB, "no-retrun")
    assert str(info.value) == (
        "lab tiny (t.yaml) has no variant 'no-retrun'; did you mean 'no-return'? (its variants: no-return, mtu)"
    )


def test_variant_of_a_lab_without_variants() -> None:
    with pytest.raises(UsageError, match=r"lab tiny \(t.yaml\) has no variants .* none called 'x'"):
        text_lab(LAB[: LAB.index("variants:")], "x")


def test_load_variants_gives_every_lab(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB, encoding="utf-8")
    labs = load_variants(path)
    assert [lab.name for lab, _ in labs.all()] == ["tiny", "tiny-no-return", "tiny-mtu"]
    assert labs.named("tiny-mtu") is labs.variants["mtu"][0] and labs.named("tiny-x") is None


# ---------------------------------------------------------------- the CLI


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), standalone_mode=False)


def test_validate_lists_the_variants(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    result = _invoke("validate", str(path))
    assert result.exception is None, result.output
    assert result.output.strip().endswith("(2 variants: no-return, mtu)")


def test_validate_fails_on_a_bad_variant(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(with_variants("variants:\n  v: {nodes: {a: {sysctls: {kernel.x: 1}}}}\n"))
    result = _invoke("validate", str(path))
    assert result.return_value == 2
    assert 'variants.v.nodes.a.sysctls["kernel.x"]' in result.output


def test_dry_run_of_a_variant(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    result = _invoke("up", "--dry-run", "--variant", "mtu", str(path))
    assert result.exception is None, result.output
    assert result.output.startswith("# plan for lab tiny-mtu:")
    assert "ip netns add tiny-mtu.a" in result.output and "mtu 1400" in result.output


def test_dry_run_of_an_unknown_variant(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    result = _invoke("up", "--dry-run", "--variant", "nope", str(path))
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2


def _plan_lines(lab: Any) -> list[str]:
    return [op.render() for op in build_plan(lab).ops]


CLUSTER_LAB = """\
name: cl
cluster:
  backend: vxlan
  pod_cidr: 10.244.0.0/16
  nodes: {node1: {}, node2: {}}
  pods: {web: {replicas: 2, serve: [tcp/80]}}
checks:
  - name: web-0 reaches web-1
    probe: {from: web-0, to: web-1, port: 80}
variants:
  host-gw:
    description: the same pods over host-gw routes
    cluster: {backend: host-gw}
  one-pod:
    cluster:
      pods: {web: {replicas: 1}}
    checks: []
"""


@pytest.mark.parametrize("text", [LAB, CLUSTER_LAB], ids=["plain", "cluster"])
def test_render_keeps_every_variant_building_the_same(tmp_path: Path, text: str) -> None:
    src = tmp_path / "lab.yaml"
    src.write_text(text)
    result = _invoke("render", str(src))
    assert result.exception is None, result.output
    out = tmp_path / "rendered.yaml"
    out.write_text(result.output)
    original, rendered = load_variants(src), load_variants(out)
    assert list(rendered.variants) == list(original.variants)
    for variant in (None, *original.variants):
        a, b = original.get(variant)[0], rendered.get(variant)[0]
        assert _plan_lines(a) == _plan_lines(b), variant
        assert [c.name for c in a.checks] == [c.name for c in b.checks]
        assert a.name == b.name and a.description == b.description


def test_render_one_variant_alone(tmp_path: Path) -> None:
    src = tmp_path / "lab.yaml"
    src.write_text(LAB)
    result = _invoke("render", "--variant", "no-return", str(src))
    assert result.exception is None, result.output
    data = yaml.safe_load(result.output)
    assert data["name"] == "tiny-no-return" and "variants" not in data and "routes" not in data["nodes"]["b"]
    result = _invoke("render", "--json", str(src))
    data = json.loads(result.output)["lab"]
    assert data["variants"]["no-return"]["nodes"] == {"b": {"routes": None}}


def test_help_teaches_variants() -> None:
    for command in ("up", "check", "render"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert "--variant NAME" in result.output, command
    assert "--variant" in CliRunner().invoke(cli, ["--help"]).output


def test_variant_source_keeps_the_file() -> None:
    from netlab.lab.variants import VariantSource

    source = Source("f.yaml", {("variants", "v", "nodes"): 7})
    vs = VariantSource.of(source, "v", {("nodes",): ("variants", "v", "nodes")})
    p = vs.problem(("nodes", "a"), "bad")
    assert (p.file, p.line, p.path, p.message) == ("f.yaml", 7, "variants.v.nodes.a", "bad")
    assert vs.problem(("checks",), "x").message == "in variant v: x"
