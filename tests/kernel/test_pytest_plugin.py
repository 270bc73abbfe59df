"""netlab.pytest_plugin: inner pytest runs (pytester, in a subprocess each) that build real
labs with the plugin's fixtures, and what they leave behind (nothing).

Every lab gets a unique `t-<hex>` name from the session registry (so the session leak
guard watches it too); names made with `unique=True` get a further suffix, which
`_leftovers` covers by prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netlab.pytest_plugin import LabHandle, unique_name

pytest_plugins = ["pytester"]

NETNS_DIR = "/run/netns"
STATE_DIR = os.environ.get("NETLAB_STATE_DIR", "/run/netlab")


def two_nodes(name: str, **extra: Any) -> dict[str, Any]:
    """a —veth— b (10.0.0.1 / 10.0.0.2), b serves tcp/8080."""
    return {
        "name": name,
        **extra,
        "nodes": {
            "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ["10.0.0.1/24"]}}},
            "b": {"links": {"eth0": {"addresses": ["10.0.0.2/24"]}}, "serve": ["tcp/8080"]},
        },
    }


CHECKS = [
    {"name": "a reaches b", "probe": {"from": "a", "to": "b:8080"}, "expect": {"served_by": "b"}},
    {"name": "a routes to b on eth0", "route": {"on": "a", "get": "10.0.0.2"}, "expect": {"dev": "eth0"}},
    {"name": "b answers ping", "probe": {"from": "b", "to": "a"}},
]


def _responders(name: str) -> dict[int, str]:
    """Responder processes (pid → lab) of the lab `name` or of `name-<suffix>` labs."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0") if entry.isdigit() else []
        except OSError:
            continue
        if b"netlab.probes.responder_server" in argv and b"--lab" in argv:
            lab = argv[argv.index(b"--lab") + 1].decode() if argv.index(b"--lab") + 1 < len(argv) else ""
            if lab.startswith(name):
                found[int(entry)] = lab
    return found


def _leftovers(name: str) -> list[str]:
    """Namespaces, state files and responders of the lab `name` and of `name-<suffix>` labs."""
    found = (
        [f"namespace {n}" for n in sorted(os.listdir(NETNS_DIR)) if n.startswith(name)]
        if os.path.isdir(NETNS_DIR)
        else []
    )
    if os.path.isdir(STATE_DIR):
        found += [f"state {f}" for f in sorted(os.listdir(STATE_DIR)) if f.lstrip(".").startswith(name)]
    return found + [f"responder {pid} of {lab}" for pid, lab in sorted(_responders(name).items())]


def _take_down(name: str) -> None:
    """After a broken test: `netlab down` every lab made from `name` that left anything."""
    labs = {n.split(".")[0] for n in os.listdir(NETNS_DIR) if n.startswith(name)} if os.path.isdir(NETNS_DIR) else set()
    if os.path.isdir(STATE_DIR):
        labs |= {f.lstrip(".").split(".")[0] for f in os.listdir(STATE_DIR) if f.lstrip(".").startswith(name)}
    labs |= set(_responders(name).values())
    for lab in sorted(labs):
        subprocess.run([sys.executable, "-m", "netlab.cli", "down", lab], capture_output=True, timeout=120)


def _namespaces(name: str) -> list[str]:
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{name}.")) if os.path.isdir(NETNS_DIR) else []


class Inner:
    """An inner pytest project in pytester.path: lab files, test files, a run."""

    def __init__(self, pytester: pytest.Pytester, registry: Any) -> None:
        self.pytester = pytester
        self.registry = registry
        self.names: list[str] = []
        # Pins the inner rootdir, and the inner run is as strict as ours.
        pytester.makeini("[pytest]\nfilterwarnings = error\naddopts = -p no:cacheprovider\n")

    def name(self) -> str:
        name = str(self.registry.new_name())
        self.names.append(name)
        return name

    def lab(self, spec: dict[str, Any], filename: str = "lab.yaml") -> Path:
        path = self.pytester.path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def test(self, source: str, filename: str = "test_inner.py", **subst: Any) -> Path:
        path = self.pytester.path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(source)
        for key, value in subst.items():
            text = text.replace(f"@{key.upper()}@", str(value))
        path.write_text(text)
        return path

    def run(self, *args: str) -> pytest.RunResult:
        result = self.pytester.runpytest_subprocess("-v", "-rA", *args, timeout=180)
        for name in self.names:
            assert _leftovers(name) == [], f"the inner run left lab {name} behind:\n{result.stdout.str()}"
        return result


@pytest.fixture
def inner(pytester: pytest.Pytester, registry: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inner]:
    monkeypatch.delenv("CI", raising=False)  # each test says whether the inner run is "in CI"
    made = Inner(pytester, registry)
    try:
        yield made
    finally:
        for name in made.names:
            if _leftovers(name):
                _take_down(name)


def out(result: pytest.RunResult) -> str:
    return str(result.stdout.str())


# ---------------------------------------------------------------- the handle


def test_probe_and_kernel_views(inner: Inner) -> None:
    name = inner.name()
    inner.lab(two_nodes(name))
    inner.test(
        """
        import os
        import subprocess

        def test_datapath(netlab_lab):
            lab = netlab_lab("lab.yaml")
            assert lab.name == "@NAME@"
            assert lab.nodes == {"a": "@NAME@.a", "b": "@NAME@.b"}
            assert lab.ns("b") == "@NAME@.b" and lab.address("b") == "10.0.0.2"
            assert os.path.exists("/run/netns/@NAME@.a")

            r = lab.probe("a", "b:8080")  # a node and a port, as in a lab file's check
            assert r.ok and r.proto == "tcp" and r.served_by == "b" and r.server_saw == "10.0.0.1", r.detail
            assert lab.probe("a", "10.0.0.2", port=9).outcome == "refused"
            assert lab.probe("a", "b").proto == "icmp"
            many = lab.probe("a", "b", port=8080, count=3)
            assert [x.outcome for x in many] == ["ok"] * 3
            assert lab.probe("a", "10.0.0.99", timeout=0.3).outcome in ("timeout", "unreachable")

            route = lab.route_get("a", "10.0.0.2")
            assert (route.type, route.dev, route.prefsrc) == ("unicast", "eth0", "10.0.0.1")
            assert any(rule.table == 254 for rule in lab.rules("a"))
            assert lab.conntrack("a", flow=r) == []  # nothing in the lab uses conntrack

            done = lab.exec("a", "ip", "-br", "addr", "show", "eth0")
            assert done.returncode == 0 and "10.0.0.1/24" in done.stdout
            assert lab.exec("a", "false").returncode == 1
            try:
                lab.exec("a", "false", check=True)
            except subprocess.CalledProcessError:
                pass
            else:
                raise AssertionError("check=True did not raise")
        """,
        name=name,
    )
    result = inner.run()
    result.assert_outcomes(passed=1)


def test_handle_in_this_session(netlab_lab: Any, registry: Any) -> None:
    """The plugin is loaded by its entry point here too: the fixture, used directly."""
    name = registry.new_name()
    lab = netlab_lab(two_nodes(name))
    assert isinstance(lab, LabHandle)
    assert _namespaces(name) == [f"{name}.a", f"{name}.b"]
    assert list(_responders(name).values()) == [name]  # (what _leftovers looks for works)
    result = lab.probe("b", "a", family=4)
    assert result.ok, result.detail
    with pytest.raises(ValueError, match="no node 'c'"):
        lab.probe("c", "a")
    with pytest.raises(ValueError, match="neither an address nor a node"):
        lab.probe("a", "bb")
    with pytest.raises(ValueError, match="no check 'nope'"):
        lab.run_check("nope")


def test_run_check_and_run_checks(inner: Inner) -> None:
    name = inner.name()
    inner.lab(two_nodes(name, checks=[*CHECKS, {"name": "nothing on 9999", "probe": {"from": "a", "to": "b:9999"}}]))
    inner.test(
        """
        def test_verdicts(netlab_lab):
            lab = netlab_lab("lab.yaml")
            assert lab.run_check("a reaches b").passed
            verdicts = {v.name: v for v in lab.run_checks()}
            assert [n for n, v in verdicts.items() if not v.passed] == ["nothing on 9999"]
            assert "refused" in verdicts["nothing on 9999"].reasons[0]
        """
    )
    inner.run().assert_outcomes(passed=1)


# ---------------------------------------------------------------- lab_checks


def test_lab_checks_one_lab_per_module(inner: Inner) -> None:
    name = inner.name()
    inner.lab(two_nodes(name, checks=CHECKS), "labs/lab.yaml")
    # Count the builds: the inner conftest wraps lifecycle.up.
    inner.test(
        """
        import pytest
        from netlab import lifecycle

        BUILT = []
        _up = lifecycle.up

        def counting_up(*args, **kwargs):
            result = _up(*args, **kwargs)
            BUILT.append(result.lab)
            return result

        lifecycle.up = counting_up

        @pytest.fixture
        def built():
            return BUILT
        """,
        "tests/conftest.py",
    )
    # labs/lab.yaml is not next to the test files: found in the rootdir.
    inner.test(
        """
        import os
        from netlab.pytest_plugin import lab_checks

        test_lab = lab_checks("labs/lab.yaml")

        def test_zz_same_lab(netlab_lab_module, built):
            lab = netlab_lab_module("labs/lab.yaml")  # what lab_checks built: the same arguments
            assert built == ["@NAME@"]
            assert os.path.exists("/run/netns/@NAME@.a") and os.path.exists("/run/netns/@NAME@.b")
            assert lab.probe("a", "b:8080").ok
        """,
        "tests/test_one.py",
        name=name,
    )
    inner.test(
        """
        import os
        from netlab.pytest_plugin import lab_checks

        def test_aa_first_module_lab_is_gone(built):
            assert built == ["@NAME@"]
            assert not os.path.exists("/run/netns/@NAME@.a")

        test_lab = lab_checks("labs/lab.yaml")

        def test_zz_built_again(built):
            assert built == ["@NAME@", "@NAME@"]
        """,
        "tests/test_two.py",
        name=name,
    )
    result = inner.run("tests/test_one.py", "tests/test_two.py")
    result.assert_outcomes(passed=2 * len(CHECKS) + 3)
    text = out(result)
    for check in CHECKS:
        assert f"tests/test_one.py::test_lab[{check['name']}] PASSED" in text
        assert f"tests/test_two.py::test_lab[{check['name']}] PASSED" in text


def test_lab_checks_failure_says_why(inner: Inner) -> None:
    name = inner.name()
    failing = {
        "name": "b serves 9999",
        "description": "nothing listens there",
        "probe": {"from": "a", "to": "b", "port": 9999},
        "expect": {"served_by": "b"},
    }
    inner.lab(two_nodes(name, checks=[CHECKS[0], failing]))
    inner.test(
        """
        from netlab.pytest_plugin import lab_checks

        test_lab = lab_checks("lab.yaml")
        """
    )
    result = inner.run()
    result.assert_outcomes(passed=1, failed=1)
    text = out(result)
    assert "test_inner.py::test_lab[b serves 9999] FAILED" in text
    assert "check 'b serves 9999' failed: tcp 10.0.0.2:9999: refused" in text
    assert "nothing listens there" in text
    assert "expected ok, saw refused: " in text  # the judge's reason
    assert "Traceback" not in text and "def test_lab_check" not in text  # just the verdict


def test_lab_checks_bad_and_missing_files(inner: Inner) -> None:
    name = inner.name()
    inner.pytester.path.joinpath("bad.yaml").write_text(
        f"name: {name}\nnodes:\n  a:\n    links:\n      eth0: {{adresses: [10.0.0.1/24]}}\n"
    )
    inner.lab({"name": name, "nodes": {"a": {}}}, "empty.yaml")
    inner.test(
        """
        from netlab.pytest_plugin import lab_checks

        test_bad = lab_checks("bad.yaml")
        test_missing = lab_checks("nowhere/lab.yaml")
        test_empty = lab_checks("empty.yaml")
        """
    )
    result = inner.run()
    result.assert_outcomes(failed=2, skipped=1)
    text = out(result)
    assert "test_bad[lab-file-error] FAILED" in text
    assert "bad.yaml:5: nodes.a.links.eth0.adresses:" in text
    assert "test_missing[lab-file-error] FAILED" in text
    assert "nowhere/lab.yaml: no such lab file (looked at" in text
    assert f"lab {name} has no checks" in text


# ---------------------------------------------------------------- clean-up


@pytest.mark.parametrize("scope", ["netlab_lab", "netlab_lab_module"])
def test_down_after_failing_test(inner: Inner, scope: str) -> None:
    name = inner.name()
    inner.lab(two_nodes(name))
    inner.test(
        """
        import os

        def test_fails(@SCOPE@):
            lab = @SCOPE@("lab.yaml")
            assert os.path.exists("/run/netns/@NAME@.a")
            raise RuntimeError("the test broke")

        def test_error_in_fixture_user(@SCOPE@):
            @SCOPE@("lab.yaml")
            assert False, "and so did this one"
        """,
        name=name,
        scope=scope,
    )
    result = inner.run()
    result.assert_outcomes(failed=2)
    assert "RuntimeError: the test broke" in out(result)


@pytest.mark.parametrize("raise_", ["KeyboardInterrupt", "SystemExit(3)"])
def test_down_after_interrupt_in_test(inner: Inner, raise_: str) -> None:
    name, other = inner.name(), inner.name()
    inner.lab(two_nodes(name))
    inner.lab(two_nodes(other), "other.yaml")
    inner.test(
        """
        import os

        def test_interrupted(netlab_lab, netlab_lab_module):
            netlab_lab("lab.yaml")
            netlab_lab_module("other.yaml")
            assert os.path.exists("/run/netns/@NAME@.a") and os.path.exists("/run/netns/@OTHER@.a")
            raise @EXC@
        """,
        name=name,
        other=other,
        exc=raise_,
    )
    result = inner.run()
    if raise_ == "KeyboardInterrupt":
        assert result.ret == pytest.ExitCode.INTERRUPTED
        assert "KeyboardInterrupt" in out(result)
    else:
        result.assert_outcomes(failed=1)


def test_down_after_sigint(inner: Inner) -> None:
    """A real Ctrl-C (SIGINT) while the test runs: pytest tears the fixtures down."""
    name = inner.name()
    inner.lab(two_nodes(name))
    ready = inner.pytester.path / "ready"
    inner.test(
        """
        import pathlib
        import time

        def test_waits(netlab_lab):
            netlab_lab("lab.yaml")
            pathlib.Path("@READY@").write_text("up")
            time.sleep(60)
        """,
        ready=ready,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=inner.pytester.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the inner test never got its lab up"
        assert _namespaces(name) == [f"{name}.a", f"{name}.b"]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert _leftovers(name) == []


# ---------------------------------------------------------------- skips and failures


@pytest.mark.parametrize("ci", [None, "true"])
def test_missing_feature_skips_or_fails_in_ci(inner: Inner, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    """This kernel has no vrf: skip with netlab's reason, but in CI (CI=true) fail."""
    from netlab.kernel.features import probe_features

    if probe_features(["vrf"])[0].ok:
        pytest.skip("this kernel has vrf (the Vagrant box?); the test needs one without it")
    if ci is not None:
        monkeypatch.setenv("CI", ci)
    name = inner.name()
    inner.lab(two_nodes(name, requires=["vrf"], checks=CHECKS[:2]))
    inner.test(
        """
        from netlab.pytest_plugin import lab_checks

        test_checks = lab_checks("lab.yaml")

        def test_fixture(netlab_lab):
            netlab_lab("lab.yaml")
        """
    )
    result = inner.run()
    text = out(result)
    assert f"lab {name} needs kernel features this kernel lacks:" in text
    assert "vrf: ip link add type vrf" in text
    if ci is None:
        result.assert_outcomes(skipped=3)
    else:
        result.assert_outcomes(failed=3)
        assert "CI=true: a missing kernel feature fails instead of skipping" in text


@pytest.mark.parametrize("ci", [None, "true"])
def test_not_root_skips(inner: Inner, public_dir: Path, kn: Any, ci: str | None) -> None:
    """As an unprivileged user: skipped with the reason (the lab file is still validated);
    under CI=true the same tests fail with that reason instead of skipping."""
    name = inner.name()
    (public_dir / "lab.yaml").write_text(yaml.safe_dump(two_nodes(name, checks=CHECKS[:1])))
    (public_dir / "bad.yaml").write_text(f"name: {name}\nnodes: {{a: {{links: {{eth0: {{kind: bridge, mtu: 9}}}}}}}}\n")
    (public_dir / "test_nobody.py").write_text(
        textwrap.dedent(
            """
        from netlab.pytest_plugin import lab_checks

        test_checks = lab_checks("lab.yaml")

        def test_fixture(netlab_lab):
            netlab_lab("lab.yaml")

        def test_bad_file_still_fails(netlab_lab):
            netlab_lab("bad.yaml")
        """
        )
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [*kn.nobody, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-W", "error", "test_nobody.py"],
        cwd=public_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = proc.stdout + proc.stderr
    if ci is None:
        assert "2 skipped" in text and "1 failed" in text, text
    else:
        assert "3 failed" in text and "skipped" not in text, text
        assert "a lab that cannot be built fails instead of skipping" in text, text
    assert "netlab needs root to build lab" in text
    assert "bad.yaml:2: nodes.a.links.eth0.mtu:" in text


def test_bad_lab_fails_with_file_line(inner: Inner) -> None:
    name = inner.name()
    inner.pytester.path.joinpath("bad.yaml").write_text(
        f"name: {name}\nnodes:\n  a:\n    routes:\n      - {{to: 10.0.0.0/8, gw: 10.0.0.1}}\n"
    )
    inner.test(
        """
        def test_bad_file(netlab_lab):
            netlab_lab("bad.yaml")

        def test_bad_dict(netlab_lab):
            netlab_lab({"name": "@NAME@", "nodes": {"a": {"links": {"eth0": {"kind": "bridge", "mtu": 9}}}}})

        def test_build_fails(netlab_lab):
            netlab_lab({"name": "@NAME@", "nodes": {"a": {"exec": [["false"]]}}})
        """,
        name=name,
    )
    result = inner.run()
    result.assert_outcomes(failed=3)
    text = out(result)
    assert "bad.yaml:5: nodes.a.routes[0].gw:" in text
    assert "<dict>: nodes.a.links.eth0.mtu:" in text
    assert "everything created so far was removed" in text  # netlab's ApplyError, rolled back


# ---------------------------------------------------------------- dicts and names


def test_dict_lab_and_renames(inner: Inner) -> None:
    name, renamed, as_dict = inner.name(), inner.name(), inner.name()
    inner.lab(two_nodes(name))
    inner.test(
        """
        import os
        from netlab.pytest_plugin import lab_checks

        def spec(name):
            return {
                "name": name,
                "nodes": {
                    "a": {"links": {"eth0": {"peer": "b:eth0", "addresses": ("10.0.0.1/24",)}}},  # a tuple too
                    "b": {"links": {"eth0": {"addresses": ["10.0.0.2/24"]}}, "serve": ["udp/53"]},
                },
                "checks": [{"name": "dns", "probe": {"from": "a", "to": "b:53", "proto": "udp"}}],
            }

        def ns(lab):
            return sorted(n for n in os.listdir("/run/netns") if n.startswith(lab + "."))

        def test_dict(netlab_lab):
            lab = netlab_lab(spec("@DICT@"))
            assert ns("@DICT@") == ["@DICT@.a", "@DICT@.b"]
            r = lab.probe("a", "b:53", proto="udp")
            assert r.ok and r.served_by == "b", r.detail
            assert lab.source.name == "@DICT@.yaml" and lab.source.exists()

        def test_renamed_file(netlab_lab):
            lab = netlab_lab("lab.yaml", name="@RENAMED@")
            assert lab.name == "@RENAMED@" and ns("@RENAMED@") == ["@RENAMED@.a", "@RENAMED@.b"]
            assert ns("@NAME@") == []
            assert lab.probe("a", "b:8080").ok

        def test_same_file_twice(netlab_lab):
            one = netlab_lab("lab.yaml", unique=True)
            two = netlab_lab("lab.yaml", unique=True)
            assert one.name != two.name
            assert one.name.startswith("@NAME@-") and two.name.startswith("@NAME@-")
            assert ns(one.name) and ns(two.name)
            assert one.probe("a", "b:8080").ok and two.probe("a", "b:8080").ok
            assert ns("@NAME@") == []

        def test_collision_says_what_to_do(netlab_lab):
            netlab_lab("lab.yaml")
            netlab_lab("lab.yaml")

        test_dict_checks = lab_checks(spec("@DICT@"), unique=True)
        """,
        name=name,
        renamed=renamed,
        dict=as_dict,
    )
    result = inner.run()
    result.assert_outcomes(passed=4, failed=1)
    text = out(result)
    assert "test_dict_checks[dns] PASSED" in text
    assert f"lab {name} is already up" in text and "unique=True" in text


def test_running_lab_for_a_session_fixture(inner: Inner) -> None:
    name = inner.name()
    inner.lab(two_nodes(name), "labs/lab.yaml")
    inner.test(
        """
        import pytest
        from netlab.pytest_plugin import running_lab

        @pytest.fixture(scope="session")
        def lab(request):
            with running_lab("labs/lab.yaml", rootdir=request.config.rootpath) as handle:
                yield handle
        """,
        "conftest.py",
    )
    for module in ("test_one.py", "test_two.py"):
        inner.test(
            """
            import os

            def test_session_lab(lab):
                assert lab.name == "@NAME@" and lab.probe("a", "b:8080").ok
                ino = os.stat("/run/netns/@NAME@.a").st_ino
                with open("inodes", "a") as f:
                    f.write(f"{ino}\\n")
            """,
            module,
            name=name,
        )
    inner.run().assert_outcomes(passed=2)
    inodes = (inner.pytester.path / "inodes").read_text().split()
    assert len(inodes) == 2 and len(set(inodes)) == 1  # one namespace, seen from both modules


def test_unique_name_fits() -> None:
    long = "x" * 32
    made = unique_name(long)
    assert len(made) == 32 and made.startswith("x" * 25 + "-")
    assert unique_name("lab").startswith("lab-") and len(unique_name("lab")) == 10
