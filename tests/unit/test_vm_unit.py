"""The VM runner's pieces that need no VM: which kernel, KVM or not, the guest script and
the vng command line. (The runner itself is exercised by scripts/test, which runs
tests/vm inside it.)"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from netlab import vm
from netlab.errors import MissingFeature, UsageError


def run(tmp_path: Path, **kw: object) -> vm.VmRun:
    base: dict[str, object] = {
        "argv": ["pytest", "-k", "a b"],
        "results": tmp_path,
        "kernel": "/boot/vmlinuz-x",
        "kvm": False,
        "cwd": "/work/main",
    }
    return vm.VmRun(**{**base, **kw})  # type: ignore[arg-type]


def test_kernel_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "vmlinuz-9.9"
    image.write_text("")
    monkeypatch.setenv("NETLAB_VM_KERNEL", str(image))
    assert vm.find_kernel() == str(image)
    monkeypatch.setenv("NETLAB_VM_KERNEL", str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="is not a file"):
        vm.find_kernel()


def test_newest_kernel_in_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETLAB_VM_KERNEL", raising=False)
    kernels = ["/boot/vmlinuz-6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-56-amd64", "/boot/vmlinuz-5.10.0-30-amd64"]
    monkeypatch.setattr("netlab.vm.glob.glob", lambda _p: kernels)
    assert vm.find_kernel() == "/boot/vmlinuz-6.1.0-56-amd64"
    monkeypatch.setattr("netlab.vm.glob.glob", lambda _p: [])
    with pytest.raises(MissingFeature, match="scripts/setup"):
        vm.find_kernel()


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True)])
def test_kvm_forced(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("NETLAB_VM_KVM", value)
    assert vm.kvm_usable() is expected
    assert vm.kvm_choice() == (expected, f"NETLAB_VM_KVM={value}")


@pytest.mark.parametrize(
    ("dev", "flags", "expected"),
    [
        (FileNotFoundError, "", (False, "/dev/kvm missing")),
        (PermissionError(13, "Permission denied"), "", (False, "/dev/kvm present but not usable: Permission denied")),
        (
            None,
            "flags\t: fpu sse2 hypervisor",
            (False, "/dev/kvm present but this CPU has no VMX/SVM (nested KVM would hang)"),
        ),
        (None, "flags\t: fpu vmx sse2", (True, "/dev/kvm usable and the CPU has VMX/SVM")),
    ],
)
def test_why_kvm_or_emulation(
    monkeypatch: pytest.MonkeyPatch, dev: Any, flags: str, expected: tuple[bool, str]
) -> None:
    monkeypatch.delenv("NETLAB_VM_KVM", raising=False)

    real_open = os.open

    def fake_open(path: str, _flags: int) -> int:
        assert path == "/dev/kvm"
        if dev is not None:
            raise dev
        return real_open("/dev/null", os.O_RDONLY)

    monkeypatch.setattr("netlab.vm.os.open", fake_open)
    monkeypatch.setattr("netlab.vm.Path.read_text", lambda _self: flags)
    assert vm.kvm_choice() == expected


@pytest.mark.parametrize(("kvm", "slowness"), [(False, "10"), (True, "2")])
def test_the_guest_gets_the_vms_slowness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kvm: bool, slowness: str
) -> None:
    monkeypatch.delenv("NETLAB_SLOWNESS", raising=False)
    lines = vm.guest_script(run(tmp_path, kvm=kvm)).splitlines()
    assert f"export NETLAB_SLOWNESS={slowness}" in lines


def test_guest_script_loads_modules_runs_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("NETLAB_TIMING", "1")
    monkeypatch.setenv("SECRET_TOKEN", "x")
    script = vm.guest_script(run(tmp_path, modules=("ip_vs", "vrf")))
    lines = script.splitlines()
    assert "for m in ip_vs vrf; do" in lines
    assert "mkdir -p /run/netns /run/netlab" in lines
    assert "cd /work/main || exit 125" in lines
    assert "export CI=true" in lines and "export NETLAB_TIMING=1" in lines and "export NETLAB_IN_VM=1" in lines
    assert not any("SECRET_TOKEN" in line for line in lines)  # only a known set of variables goes in
    assert "pytest -k 'a b'" in lines
    assert lines[-2:] == [f"echo $rc > {tmp_path}/exit-code", "exit $rc"]


def test_guest_script_is_valid_sh(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text(vm.guest_script(run(tmp_path)))
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0


def test_vng_command_line(tmp_path: Path) -> None:
    argv = vm.vng_argv(run(tmp_path, rwdirs=("/srv/x",)), "/venv/bin/vng", tmp_path / "s.sh")
    assert argv[:3] == ["/venv/bin/vng", "--run", "/boot/vmlinuz-x"]
    assert argv[3:5] == ["--user", "root"]
    assert argv.count("--rwdir") == 2 and str(tmp_path) in argv and "/srv/x" in argv
    assert "--disable-kvm" in argv
    assert argv[-2:] == ["--exec", f"sh {tmp_path / 's.sh'}"]
    assert "--disable-kvm" not in vm.vng_argv(run(tmp_path, kvm=True), "vng", tmp_path / "s.sh")


def test_a_timeout_runs_the_command_in_its_own_session_beside_a_watchdog(tmp_path: Path) -> None:
    script = vm.guest_script(run(tmp_path, timeout=2700))
    lines = script.splitlines()
    assert "setsid pytest -k 'a b' &" in lines
    assert f"setsid sh -c {shlex.quote(vm.WATCHDOG)} netlab-vm-watchdog $pid 2700 {tmp_path}/timed-out &" in script
    assert f"[ -e {tmp_path}/timed-out ] && rc=124" in lines
    assert "export PYTHONFAULTHANDLER=1" in lines
    assert "pytest -k 'a b'" not in lines  # not also run unwatched
    path = tmp_path / "s.sh"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    assert subprocess.run(["sh", "-n", "-c", vm.WATCHDOG], capture_output=True).returncode == 0


def test_without_a_timeout_the_command_runs_as_it_is(tmp_path: Path) -> None:
    lines = vm.guest_script(run(tmp_path)).splitlines()
    assert not any("setsid" in line or "PYTHONFAULTHANDLER" in line for line in lines)


def test_the_console_is_copied_until_it_closes_or_the_budget_ends(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    read, write = os.pipe()
    try:
        os.write(write, b"booting\n")
        assert vm._copy_console(read, 0.3) is False  # open and quiet: the budget ends it
        os.write(write, b"done\n")
        os.close(write)
        write = -1
        assert vm._copy_console(read, 5) is True
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert capfdbinary.readouterr().out == b"booting\ndone\n"


def test_a_guest_that_never_ends_is_stopped_by_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wedged guest runs no watchdog: the host stops QEMU (here a stand-in that never
    ends, our child) once --timeout and the host's grace have passed, and says so."""
    monkeypatch.setattr(vm, "find_vng", lambda: "vng")
    monkeypatch.setattr(vm, "vng_argv", lambda *_a: ["sh", "-c", "echo booting; exec sleep 600"])
    monkeypatch.setattr(vm, "HOST_GRACE", 0.5)
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*a: Any, **k: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(*a, **k))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    assert vm.run_in_vm(run(tmp_path, timeout=1)) == vm.EXIT_TIMEOUT
    (proc,) = started
    assert proc.returncode is not None, "the stand-in for QEMU still runs"
    assert "the guest is wedged); it was stopped" in capsys.readouterr().err


def test_a_command_that_ends_in_time_ends_its_watchdog_too(tmp_path: Path) -> None:
    """The watched command as the guest runs it, here (it ends before the watchdog fires,
    which therefore touches nothing): its rc passes through and the watchdog's session,
    its sleep included, is gone."""
    script = "\n".join(vm.watched(run(tmp_path, argv=["sh", "-c", "exit 3"], timeout=600)))
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", script + '\necho "$rc $watchdog"'], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30, "the watchdog outlived the command by its sleeps"
    rc, watchdog = done.stdout.split()
    assert rc == "3", done
    listed = subprocess.run(["ps", "-g", watchdog, "-o", "pid=,stat=,args="], capture_output=True, text=True).stdout
    # a zombie (Z) has ended: init reaps it in its own time
    left = [line for line in listed.splitlines() if not line.split()[1].startswith("Z")]
    assert left == [], f"the watchdog's session outlived the command: {left}"
    assert not (tmp_path / vm.TIMED_OUT).exists()


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_timeout_is_refused_before_anything_boots(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "vm", "run", "--timeout", value, "--results", str(tmp_path), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "'--timeout'" in done.stderr and value in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # no guest script written, no VM started
