"""Sysctl names are checked against the kernel before `up` creates anything: a name a fresh
network namespace has no /proc/sys entry for is bad input (exit 2), for `up` and for
`validate` as root; without root `validate` warns from the shipped list and exits 0."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from netlab.lab.sysctls import keys_of_tree, shipped_keys
from netlab.preflight import netns_sysctl_keys

LAB = """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.0.0.1/24]}
    sysctls:
      net.ipv4.ip_forward: 1
      net.ipv4.ip_fowrard: 1
      net/ipv4/conf/eth0/rp_filtr: 0
  b: {}
"""


def _netns() -> list[str]:
    return sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []


def test_fresh_namespace_keys_are_read_in_a_namespace_of_their_own() -> None:
    before = _netns()
    keys = netns_sysctl_keys()
    assert _netns() == before, "the throwaway namespace must not be named"
    assert {"net.ipv4.ip_forward", "net.ipv4.conf.*.rp_filter", "net.ipv6.conf.*.accept_dad"} <= keys
    # Only the fresh namespace's interfaces (lo) show, and those as `*`: none of this machine's.
    assert not [k for k in keys if k.startswith("net.ipv4.conf.") and k.split(".")[3] != "*"]
    # The shipped list was made the same way; this kernel agrees on the basics.
    assert {"net.ipv4.ip_forward", "net.ipv4.conf.*.forwarding"} <= shipped_keys()


def test_misspelt_sysctl_is_bad_input_and_nothing_is_created(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    lab = lab_file(LAB)
    expected = [
        f'{lab}:8: nodes.a.sysctls["net.ipv4.ip_fowrard"]: the kernel has no sysctl net.ipv4.ip_fowrard; '
        "did you mean net.ipv4.ip_forward?",
        f'{lab}:9: nodes.a.sysctls["net/ipv4/conf/eth0/rp_filtr"]: the kernel has no sysctl '
        "net/ipv4/conf/eth0/rp_filtr; did you mean net.ipv4.conf.eth0.rp_filter?",
    ]
    result = netlab_cli("up", lab)
    assert result.rc == 2, result
    assert result.err == "netlab: 2 problems in the lab:\n" + "".join(f"  {e}\n" for e in expected)
    assert kn.namespaces_of(lab.name) == []
    assert not kn.state_file(lab.name).exists()
    checked = netlab_cli("validate", lab)
    assert checked.rc == 2, checked
    assert checked.err == "2 problems in the lab:\n" + "".join(f"  {e}\n" for e in expected)


def test_without_root_validate_warns_and_passes(public_dir: Path, netlab_cli: Any) -> None:
    lab = public_dir / "lab.yaml"
    lab.write_text(LAB.replace("@LAB@", "sysctl-warn"))
    lab.chmod(0o644)
    result = netlab_cli("validate", lab, nobody=True)
    assert result.rc == 0, result
    assert (
        f"warning: {lab}:8: nodes.a.sysctls[\"net.ipv4.ip_fowrard\"]: netlab's list of a 6.18 kernel's "
        "sysctls has no net.ipv4.ip_fowrard; did you mean net.ipv4.ip_forward? (as root, validate asks this "
        "kernel)" in result.err
    ), result.err
    assert "rp_filtr" in result.err
    assert "✓" in result.out


RUNNING = """\
name: @LAB@
nodes:
  a:
    links:
      eth0: {peer: "b:eth0", addresses: [10.0.0.1/24]}
    sysctls:
      net.ipv4.ip_forward: 1
  b: {}
"""


def test_a_reconcile_looks_up_the_sysctl_names_the_running_lab_lacks(lab_file: Any, netlab_cli: Any, kn: Any) -> None:
    """The names the running lab has are not looked for again (that makes a namespace);
    a new one is, and a misspelt one is bad input that changes nothing."""
    lab = lab_file(RUNNING)
    assert netlab_cli("up", lab).rc == 0
    before = kn.state_file(lab.name).read_text()
    text = RUNNING.replace("@LAB@", lab.name).replace(
        "      net.ipv4.ip_forward: 1\n", "      net.ipv4.ip_forward: 0\n      net.ipv4.ip_fowrard: 0\n"
    )
    lab.path.write_text(text)
    result = netlab_cli("up", lab)
    assert result.rc == 2, result
    assert result.err == (
        "netlab: 1 problem in the lab:\n"
        f'  {lab}:8: nodes.a.sysctls["net.ipv4.ip_fowrard"]: the kernel has no sysctl net.ipv4.ip_fowrard; '
        "did you mean net.ipv4.ip_forward?\n"
    )
    assert kn.state_file(lab.name).read_text() == before
    lab.path.write_text(text.replace("      net.ipv4.ip_fowrard: 0\n", ""))
    changed = netlab_cli("up", lab)
    assert changed.rc == 0 and "reconciled in place" in changed.out, changed
    assert kn.sysctl(lab.ns("a"), "net.ipv4.ip_forward") == "0"


def test_the_probing_child_reads_the_same_fresh_namespace_keys() -> None:
    """`up` checks the lab's sysctl names against the files the probing child read in its
    own fresh namespace (before any probe made a link there): the same names as a
    namespace made for them alone, which `up` no longer has to make."""
    from netlab.kernel.features import probing_ahead

    with probing_ahead() as probe:
        assert probe.fresh_sysctl_files() is None, "nothing is read before the child answered"
        assert [f.ok for f in probe(["netns", "veth"])] == [True, True]
        files = probe.fresh_sysctl_files()
    assert files is not None
    assert keys_of_tree(files) == netns_sysctl_keys()
