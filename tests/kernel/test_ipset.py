"""ipsets on the real kernel: a node's `ipsets:` made over netlink in its namespace, before
the iptables dump that matches them (`-m set --match-set`), with real traffic through
those rules; the sets are exactly what the plan's `ipset restore` lines make; the
preflight creates the sets in its throwaway namespace before it tries the dumps, and
says where a dump names a set the lab lacks.

    client 10.1.0.2 ── eth0 server 10.1.0.1 (tcp/8080, tcp/9090, tcp/9191)
    server: INPUT rejects what the sets `deny` (src,dst: 10.1.0.2 → tcp:9090) and `ports`
    (bitmap:port 9000-9999: 9191) hold
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from netlab.errors import LabError
from netlab.kernel import netns as nsops
from netlab.kernel.nft import trial
from netlab.load import load_lab_located
from netlab.plan.build import build_plan
from netlab.plan.ops import CreateIpset
from netlab.preflight import check_firewall
from netlab.pytest_plugin import LabFactory, LabHandle, lab_checks

LAB: dict[str, Any] = {
    "name": "ipset",
    "nodes": {
        "client": {"links": {"eth0": {"peer": "server:eth0", "addresses": ["10.1.0.2/24"]}}},
        "server": {
            "serve": ["tcp/8080", "tcp/9090", "tcp/9191"],
            "links": {"eth0": {"addresses": ["10.1.0.1/24"]}},
            "ipsets": [
                {"name": "deny", "type": "hash:ip,port", "members": ["10.1.0.2,tcp:9090"]},
                {"name": "ports", "type": "bitmap:port", "range": "9000-9999", "members": [9191]},
                {
                    "name": "nets",
                    "type": "hash:net",
                    "comment": True,
                    "members": [{"entry": "192.0.2.0/24", "comment": "documentation"}, "198.51.100.7"],
                },
                {
                    "name": "v6",
                    "type": "hash:ip,port,net",
                    "family": 6,
                    "hashsize": 64,
                    "maxelem": 128,
                    "members": ["fd00::1,udp:53,fd01::/64"],
                },
                {"name": "loop", "type": "hash:ip,port,ip", "members": ["10.1.0.1,tcp:8080,10.1.0.1"]},
                {"name": "bm", "type": "bitmap:ip", "range": "10.1.0.0/28", "members": ["10.1.0.2"]},
                {"name": "ifnet", "type": "hash:net,iface", "members": ["10.0.0.0/8,eth0"]},
            ],
            "iptables": textwrap.dedent("""\
                *filter
                :INPUT ACCEPT [0:0]
                -A INPUT -p tcp -m set --match-set deny src,dst -j REJECT --reject-with tcp-reset
                -A INPUT -p tcp -m set --match-set ports dst -j REJECT --reject-with tcp-reset
                COMMIT
                """),
        },
    },
    "checks": [
        {
            "name": "a port no set holds is open",
            "probe": {"from": "client", "to": "10.1.0.1:8080"},
            "expect": {"served_by": "server"},
        },
        {
            "name": "the hash:ip,port set rejects the client's 9090",
            "probe": {"from": "client", "to": "10.1.0.1:9090"},
            "expect": {"result": "refused"},
        },
        {
            "name": "the bitmap:port set rejects 9191",
            "probe": {"from": "client", "to": "10.1.0.1:9191"},
            "expect": {"result": "refused"},
        },
    ],
}

test_ipset_lab = lab_checks(LAB, unique=True)


@pytest.fixture(scope="module")
def lab(netlab_lab_module: LabFactory) -> LabHandle:
    return netlab_lab_module(LAB, unique=True)


def _creates(lines: list[str]) -> list[str]:
    """`ipset save`'s create lines without what the kernel picks (bucket size, hash seed)."""
    return sorted(
        re.sub(r" bucketsize \d+| initval 0x[0-9a-f]+", "", line) for line in lines if line.startswith("create")
    )


def test_the_sets_are_the_plans_restore_lines(lab: LabHandle) -> None:
    """netlink made what `ipset restore` makes of the plan's lines (replayed in a
    namespace of its own): sets with their options, members as ipset lists them."""
    ops = [op for op in build_plan(lab.model).ops if isinstance(op, CreateIpset)]
    made = lab.exec("server", "ipset", "save", check=True).stdout.splitlines()
    script = "\n".join(line for op in ops for line in [op.create_line(), *op.add_lines()]) + "\n"

    def replay() -> list[str]:
        nsops.unshare_here()  # the thread's own namespace, gone when it ends
        subprocess.run(["ipset", "restore"], input=script, text=True, check=True, capture_output=True)
        return subprocess.run(["ipset", "save"], text=True, check=True, capture_output=True).stdout.splitlines()

    replayed = nsops.in_thread(replay)
    assert _creates(made) == _creates(replayed)
    assert sorted(line for line in made if line.startswith("add")) == sorted(
        line for line in replayed if line.startswith("add")
    )
    assert 'add nets 192.0.2.0/24 comment "documentation"' in made
    assert "create v6 hash:ip,port,net family inet6 hashsize 64 maxelem 128" in _creates(made)


def test_the_rules_count_what_the_sets_matched(lab: LabHandle) -> None:
    assert not lab.probe("client", "10.1.0.1:9090", timeout=0.5).ok
    rules = lab.exec("server", "iptables-nft", "-L", "INPUT", "-n", "-v", check=True).stdout
    assert re.search(r"^\s*[1-9]\d*\s+\d+\s+REJECT.*match-set deny src,dst", rules, re.M), rules


def test_preflight_makes_the_sets_before_the_dumps(tmp_path: Path) -> None:
    """The dump that matches a declared set passes the preflight; one that names a set the
    node lacks is refused at its line."""
    (tmp_path / "lab.yaml").write_text(
        textwrap.dedent("""\
        name: preflight
        nodes:
          a:
            ipsets:
              - {name: known, type: 'hash:ip', members: [192.0.2.1]}
            iptables: |
              *filter
              :INPUT ACCEPT [0:0]
              -A INPUT -m set --match-set known src -j DROP
              -A INPUT -m set --match-set nosuch src -j DROP
              COMMIT
        """)
    )
    lab, where = load_lab_located(tmp_path / "lab.yaml")
    with pytest.raises(LabError) as info:
        check_firewall(lab, where)
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (10, "nodes.a.iptables[0].save"), problem
    assert "line 4 of the dump" in problem.message and "nosuch" in problem.message, problem


def test_a_member_the_kernel_refuses_names_the_set() -> None:
    """Past the lab's own checks (which would catch it), the kernel's refusal comes back in
    ipset's words, for the set's op."""
    op = CreateIpset("x", "nodes.a.ipsets[0]", name="np", type="bitmap:port", range="10-20", members=("25",))
    failure = trial([op])
    assert failure is not None and failure.index == 0
    assert str(failure.messages[0]) == "ipset add 25: element is out of the range of the set"
