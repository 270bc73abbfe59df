"""nftables rulesets and iptables dumps in the lab file, without a kernel: the model and
its short forms, `file:`s read at load time, render round trips, the plan's ops, and how
nft's and iptables-nft-restore's complaints become lab-file lines (the preflight's mapping,
fed with the messages the real tools give; tests/kernel/test_nftables.py runs them)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from netlab.cli import cli
from netlab.errors import LabError
from netlab.kernel.nft import Message, parse_iptables_errors, parse_nft_errors
from netlab.lab.model import Lab
from netlab.lab.render import render_yaml
from netlab.load import anchor_files, load_lab, load_lab_located, load_lab_text
from netlab.plan.build import build_plan
from netlab.plan.ops import STAGES, CreateIpset, LoadNftables, RestoreIptables, stage_of
from netlab.preflight import _problems, named_interfaces

RULESET = "table inet lab {\n  chain post {\n    type nat hook postrouting priority srcnat;\n    masquerade\n  }\n}\n"
DUMP = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"


def lab(text: str, file: str = "t.yaml") -> Lab:
    return load_lab_text(textwrap.dedent(text).lstrip("\n"), file)


def write(tmp_path: Path, text: str, **files: str) -> Path:
    for name, content in files.items():
        (tmp_path / name.replace("__", ".")).write_text(content)
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# ---------------------------------------------------------------- the model and its short forms


def test_short_forms() -> None:
    text = "name: fw\nnodes:\n  r:\n    nftables: |\n      table ip t {}\n    iptables: |\n      *nat\n      COMMIT\n"
    loaded = load_lab_text(text, "t.yaml")
    node = loaded.nodes["r"]
    assert [r.ruleset for r in node.nftables] == ["table ip t {}\n"]
    assert [(d.save, d.family, d.noflush) for d in node.iptables] == [("*nat\nCOMMIT\n", 4, False)]


def test_list_of_strings_and_mappings() -> None:
    loaded = load_lab_text(
        textwrap.dedent("""\
        name: fw
        nodes:
          r:
            nftables:
              - "table ip a {}"
              - {ruleset: "table ip b {}"}
              - json: {nftables: [{add: {table: {family: ip, name: c}}}]}
              - json: '{"nftables": [{"add": {"table": {"family": "ip", "name": "d"}}}]}'
            iptables:
              - "*nat\\nCOMMIT\\n"
              - {save: "*filter\\nCOMMIT\\n", family: 6, noflush: true}
        """),
        "t.yaml",
    )
    node = loaded.nodes["r"]
    assert node.nftables[0].ruleset == "table ip a {}"
    assert node.nftables[1].ruleset == "table ip b {}"
    assert node.nftables[2].json_ == {"nftables": [{"add": {"table": {"family": "ip", "name": "c"}}}]}
    assert node.nftables[3].json_ == {"nftables": [{"add": {"table": {"family": "ip", "name": "d"}}}]}
    assert [(d.family, d.noflush) for d in node.iptables] == [(4, False), (6, True)]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (
            "{ruleset: x, json: {nftables: []}}",
            "exactly one of `ruleset:`, `json:` or `file:` (this one has ruleset and json)",
        ),
        ("{}", "exactly one of `ruleset:`, `json:` or `file:`"),
        ("{json: {nftables: {}}}", 'a mapping {"nftables": [...]}'),
        ("{json: 'not json'}", "is not valid JSON"),
    ],
)
def test_bad_ruleset_entries(entry: str, words: str) -> None:
    with pytest.raises(LabError) as info:
        lab(f"name: fw\nnodes:\n  r:\n    nftables: [{entry}]\n")
    assert words in str(info.value)
    assert "t.yaml:4: nodes.r.nftables[0]" in str(info.value)


# ---------------------------------------------------------------- files


def test_files_are_read_at_load_time(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: fw
        nodes:
          r:
            nftables:
              - file: r.nft
              - file: r.json
              - file: sub/abs-free.nft
            iptables:
              - {file: r6.save, family: 6, noflush: true}
        """,
        r__nft=RULESET,
        r__json=json.dumps({"nftables": [{"add": {"table": {"family": "ip", "name": "x"}}}]}),
        r6__save=DUMP,
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "abs-free.nft").write_text("  {json-looking? no: nft syntax}\n".replace("{", "table ip y {", 1))
    loaded, where = load_lab_located(path)
    node = loaded.nodes["r"]
    assert node.nftables[0].ruleset == RULESET and node.nftables[0].file is None
    assert node.nftables[1].json_ == {"nftables": [{"add": {"table": {"family": "ip", "name": "x"}}}]}
    assert node.nftables[2].ruleset is not None
    assert (node.iptables[0].save, node.iptables[0].family, node.iptables[0].noflush) == (DUMP, 6, True)
    assert where.files[("nodes", "r", "nftables", 0)] == str(tmp_path / "r.nft")
    assert where.files[("nodes", "r", "iptables", 0)] == str(tmp_path / "r6.save")


def test_missing_file_is_a_problem_at_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: fw
        nodes:
          r:
            nftables:
              - ruleset: "table ip t {}"
              - file: nope.nft
        """,
    )
    with pytest.raises(LabError) as info:
        load_lab(path)
    assert f"{path}:6: nodes.r.nftables[1].file: cannot read {tmp_path}/nope.nft: No such file or directory" in str(
        info.value
    )


def test_file_content_is_in_the_fingerprint(tmp_path: Path) -> None:
    path = write(tmp_path, "name: fw\nnodes:\n  r:\n    nftables: [{file: r.nft}]\n", r__nft=RULESET)
    before = build_plan(load_lab(path)).fingerprint
    (tmp_path / "r.nft").write_text(RULESET.replace("masquerade", "counter masquerade"))
    assert build_plan(load_lab(path)).fingerprint != before


def test_render_inlines_files_and_round_trips(tmp_path: Path) -> None:
    tabbed = "table ip t {\n\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n"
    path = write(
        tmp_path,
        """
        name: fw
        nodes:
          r:
            nftables:
              - file: r.nft
              - file: r.json
              - "table ip u {}"
            iptables:
              - {file: r.save, family: 6}
        """,
        r__nft=tabbed,
        r__json='{"nftables": [{"add": {"table": {"family": "ip", "name": "x"}}}]}',
        r__save=DUMP,
    )
    original = load_lab(path)
    text = render_yaml(original)
    assert "file:" not in text
    assert "ruleset: |" in text and "\tchain c {" in text  # a `|` block, tabs and all
    assert "save: |" in text and "family: 6" in text
    (tmp_path / "rendered.yaml").write_text(text)
    again = load_lab(tmp_path / "rendered.yaml")
    assert again == original
    assert build_plan(again) == build_plan(original)  # fingerprint included


def test_anchor_files(tmp_path: Path) -> None:
    data = {
        "nodes": {
            "r": {
                "nftables": [{"file": "r.nft"}, "table ip t {}", {"file": "/abs.nft"}],
                "iptables": [{"file": "d.save"}],
            }
        },
        "cluster": {"nodes": {"n": {"nftables": [{"file": "n.nft"}]}}, "pods": {"p": {"iptables": 3}}},
    }
    out = anchor_files(data, tmp_path)
    assert out["nodes"]["r"]["nftables"] == [{"file": str(tmp_path / "r.nft")}, "table ip t {}", {"file": "/abs.nft"}]
    assert out["nodes"]["r"]["iptables"] == [{"file": str(tmp_path / "d.save")}]
    assert out["cluster"]["nodes"]["n"]["nftables"] == [{"file": str(tmp_path / "n.nft")}]
    assert out["cluster"]["pods"]["p"]["iptables"] == 3  # left for validation to complain about


# ---------------------------------------------------------------- the plan


FW = """
name: fw
nodes:
  r:
    links:
      eth0: {peer: "s:eth0", addresses: [10.0.0.1/24]}
    rules: [{from: 10.9.0.0/16, table: 100}]
    exec: [[nft, list, ruleset]]
    iptables:
      - "*nat\\nCOMMIT\\n"
      - {save: "*filter\\nCOMMIT\\n", family: 6, noflush: true}
    nftables:
      - "table ip a {}\\n"
      - json: {nftables: [{add: {table: {family: ip, name: b}}}]}
  s:
    links:
      eth0: {addresses: [10.0.0.2/24]}
"""


def test_firewall_ops_and_stage() -> None:
    plan = build_plan(lab(FW))
    fw = [op for op in plan.ops if stage_of(op) == "firewall"]
    assert [op.what for op in fw] == [
        "nodes.r.nftables[0]",
        "nodes.r.nftables[1]",
        "nodes.r.iptables[0]",
        "nodes.r.iptables[1]",
    ]  # nft first, then iptables
    assert fw[0] == LoadNftables("fw.r", text="table ip a {}\n")
    assert fw[1] == LoadNftables(
        "fw.r", text='{"nftables": [{"add": {"table": {"family": "ip", "name": "b"}}}]}', json=True
    )
    assert fw[2] == RestoreIptables("fw.r", text="*nat\nCOMMIT\n")
    assert fw[3] == RestoreIptables("fw.r", text="*filter\nCOMMIT\n", family=6, noflush=True)
    stages = [stage for stage, _ in plan.by_stage()]
    assert stages.index("rules") < stages.index("firewall") < stages.index("commands")
    assert STAGES.index("firewall") == STAGES.index("rules") + 1


def test_render_of_firewall_ops() -> None:
    plan = build_plan(lab(FW))
    text = plan.render()
    assert "# firewall\nip netns exec fw.r nft -f - <<'EOF'\ntable ip a {}\nEOF\n" in text
    assert (
        "ip netns exec fw.r nft -j -f - <<'EOF'\n"
        '{"nftables": [{"add": {"table": {"family": "ip", "name": "b"}}}]}\nEOF\n'
    ) in text
    assert "ip netns exec fw.r iptables-nft-restore <<'EOF'\n*nat\nCOMMIT\nEOF\n" in text
    assert "ip netns exec fw.r ip6tables-nft-restore --noflush <<'EOF'\n*filter\nCOMMIT\nEOF\n" in text


def test_heredoc_delimiter_never_ends_the_text_early() -> None:
    op = LoadNftables("l.r", text="table ip t {\n}\nEOF\nEOF1\n")
    assert op.render() == "ip netns exec l.r nft -f - <<'EOF2'\ntable ip t {\n}\nEOF\nEOF1\nEOF2"


def test_brief_is_one_line() -> None:
    op = LoadNftables("l.r", "nodes.r.nftables[0]", text="# comment\n" + RULESET)
    assert op.brief() == "ip netns exec l.r nft -f - <<'EOF' (table inet lab { … 7 lines)"
    assert "\n" not in RestoreIptables("l.r", text=DUMP, family=6).brief()


# ---------------------------------------------------------------- what nft and iptables say


def test_parse_nft_errors_with_lines() -> None:
    err = (
        "/proc/self/fd/4:4:3-5: Error: No symbol type information\n  foo bar\n  ^^^\n"
        "/proc/self/fd/4:5:12-20: Error: Could not resolve hostname: Name or service not known\n"
        "  ip saddr 1.2.3.400 drop\n           ^^^^^^^^^\n"
    )
    assert parse_nft_errors(err, "/proc/self/fd/4") == [
        Message("Error: No symbol type information", 4, "3-5", ("  foo bar", "  ^^^")),
        Message(
            "Error: Could not resolve hostname: Name or service not known",
            5,
            "12-20",
            ("  ip saddr 1.2.3.400 drop", "           ^^^^^^^^^"),
        ),
    ]


def test_parse_nft_errors_in_an_included_file() -> None:
    """nft names the included file and line, after the `include` line of the ruleset."""
    err = (
        "In file included from /proc/self/fd/4:2:1-34:\n"
        "/etc/extra.nft:3:8-8: Error: syntax error, unexpected newline\n    foo\n       ^\n"
    )
    assert parse_nft_errors(err, "/proc/self/fd/4") == [
        Message("/etc/extra.nft:3: Error: syntax error, unexpected newline", 2, "1-34", ("    foo", "       ^")),
    ]


def test_parse_nft_json_errors() -> None:
    err = (
        "internal:0:0-0: Error: Unknown statement object 'bogus'.\n\ninternal:0:0-0: Error: Parsing expr array "
        "at index 0 failed.\n\ninternal:0:0-0: Error: Parsing command array at index 1 failed.\n\n"
    )
    assert parse_nft_errors(err, "") == [
        Message("Error: Unknown statement object 'bogus'.", command=1),
        Message("Error: Parsing expr array at index 0 failed.", command=1),
    ]
    plain = "internal:0:0-0: Error: Could not process rule: No such file or directory\n\n"
    assert parse_nft_errors(plain, "") == [Message("Error: Could not process rule: No such file or directory")]


@pytest.mark.parametrize(
    ("stderr", "line", "text"),
    [
        (
            'iptables-nft-restore v1.8.9 (nf_tables): unknown option "--dprot"\nError occurred at line: 3\n'
            "Try `iptables-nft-restore -h' or 'iptables-nft-restore --help' for more information.\n",
            3,
            'unknown option "--dprot"',
        ),
        ("iptables-nft-restore: COMMIT expected at line 4\n", 4, "COMMIT expected at line 4"),
        (
            "iptables-nft-restore: line 2 failed: No chain/target/match by that name.\n",
            2,
            "No chain/target/match by that name.",
        ),
        (
            "iptables-nft-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed (Invalid argument): rule in chain "
            "PREROUTING\n",
            3,
            "RULE_APPEND failed (Invalid argument): rule in chain PREROUTING",
        ),
    ],
)
def test_parse_iptables_errors(stderr: str, line: int, text: str) -> None:
    dump = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dprot 80 -j ACCEPT\nCOMMIT\n"
    [m] = parse_iptables_errors(stderr, dump)
    assert (m.line, m.text) == (line, text)
    assert m.context == (dump.splitlines()[line - 1],)


# ---------------------------------------------------------------- messages → lab-file lines


MAPPED = """\
name: fw
nodes:
  r:
    nftables:
      - ruleset: |
          table inet t {
            chain c {
              type filter hook input priority 0;
              ip daddr 1.2.3.4 tcp dport 80 acept
            }
          }
      - json:
          nftables:
            - add: {table: {family: inet, name: x}}
            - add: {rule: {family: inet, table: x, chain: nosuch, expr: [{counter: null}]}}
      - file: r.nft
    iptables:
      - save: "*nat\\n-A PREROUTING -d fd00::1 -j ACCEPT\\nCOMMIT\\n"
  s:
    nftables: |
      table ip t {
        chain c { jump nosuch }
      }
"""


def test_messages_map_to_lab_lines(tmp_path: Path) -> None:
    path = write(tmp_path, MAPPED, r__nft="table ip t {\n\tfoo\n}\n")
    loaded, where = load_lab_located(path)
    r, s = loaded.nodes["r"], loaded.nodes["s"]
    caret = ("    ip daddr 1.2.3.4 tcp dport 80 acept", "                                       ^")
    [p] = _problems("r", r, 0, [Message("Error: syntax error, unexpected newline", 4, "40-40", caret)], where)
    assert (p.line, p.path) == (9, "nodes.r.nftables[0].ruleset")
    assert str(p).startswith(f"{path}:9: nodes.r.nftables[0].ruleset: line 4 of the ruleset: Error: syntax error")
    assert p.message.splitlines()[1:] == ["      " + caret[0], "      " + caret[1]]  # the caret stays in place

    [p] = _problems("r", r, 1, [Message("Error: Could not process rule: No such file or directory", command=1)], where)
    assert (p.line, p.path) == (15, "nodes.r.nftables[1].json.nftables[1]")

    [p] = _problems("r", r, 2, [Message("Error: No symbol type information", 2, "2-4", ("\tfoo", "\t^^^"))], where)
    assert (p.line, p.path) == (16, "nodes.r.nftables[2].file")
    assert p.message.startswith(f"{tmp_path}/r.nft:2: Error: No symbol type information\n          foo\n          ^^^")

    [p] = _problems(
        "r",
        r,
        3,
        [Message("host/network `fd00::1' not found", 2, None, ("-A PREROUTING -d fd00::1 -j ACCEPT",))],
        where,
    )
    assert (p.line, p.path) == (18, "nodes.r.iptables[0].save")  # a quoted string: the key's line
    assert "line 2 of the dump: host/network `fd00::1' not found (an IPv6 address in an IPv4 dump?" in p.message

    [p] = _problems("s", s, 0, [Message("Error: Could not process rule: No such file or directory", 2)], where)
    assert (p.line, p.path) == (22, "nodes.s.nftables[0].ruleset")  # `nftables: |`, line 2 of it


def test_validate_without_root_says_rulesets_were_not_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(
        tmp_path, 'name: fw\nnodes:\n  r:\n    nftables: ["table ip t {}"]\n    iptables: "*nat\\nCOMMIT\\n"\n'
    )
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["validate", str(path)], standalone_mode=False)
    assert result.exception is None, result.output
    assert result.return_value == 0
    assert "2 nftables/iptables rulesets not tried: that needs root" in result.output


def test_stand_ins_are_made_for_the_interfaces_a_node_s_firewall_names() -> None:
    """The preflight's throwaway namespace gets a stand-in only for the interfaces the rules
    name (a cluster node has a veth per pod that no rule mentions): as a word of a ruleset,
    of a JSON ruleset, of an iptables dump or of an ipset member; all of them when a
    ruleset includes another file, and a name with a separator in it always."""
    node = ("eth0", "eth1", "eth2", "eth3", "veth-a1", "veth-a10", "we:rd")
    nft = LoadNftables("n", text='table inet f {\n chain c {\n  oif eth1 accept\n  iifname "veth-a1*" drop\n }\n}\n')
    assert named_interfaces(node, [nft]) == ("eth1", "we:rd")
    as_json = LoadNftables("n", text='{"nftables": [{"match": {"right": "veth-a10"}}]}', json=True)
    dump = RestoreIptables("n", text="*filter\n-A FORWARD -o eth2 -j ACCEPT\nCOMMIT\n")
    members = CreateIpset("n", name="s", type="hash:net,iface", members=("10.0.0.0/8,eth3",))
    assert named_interfaces(node, [as_json, dump, members]) == ("eth2", "eth3", "veth-a10", "we:rd")
    assert named_interfaces(node, [LoadNftables("n", text='include "rules.nft"\n')]) == node
