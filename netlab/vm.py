"""Run a command under a kernel that has everything (IPVS, VRF, netem, dummy): Debian's
stock kernel booted with virtme-ng over this machine's own filesystem.

Many kernels people test on (WSL, cloud and microVM kernels, this project's CI machines)
lack those modules. virtme-ng boots another kernel in QEMU with the host's root file
system shared read-only, so the same checkout, venv and tools run inside; only the
`results` directory (and any extra `rwdirs`) is writable from the VM. The command runs as
root after the modules are loaded; its exit code comes back as ours.

KVM is used when this machine can do it (/dev/kvm usable and the CPU advertises VMX/SVM);
otherwise QEMU emulates (TCG): slower, but it works where nested KVM hangs. Set
NETLAB_VM_KVM=0/1 to force either, NETLAB_VM_KERNEL to pick the kernel image. The guest
gets NETLAB_SLOWNESS (netlab/deadline.py), so netlab's own waits scale with the VM.
"""

from __future__ import annotations

import glob
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from netlab import deadline, interrupts
from netlab.errors import Interrupted, MissingFeature, UsageError

# Loaded before the command runs (a failure is reported, not fatal: the test says what's missing).
# br_netfilter too: nothing loads it on demand (kube-proxy's IPVS mode needs bridged replies
# to pass the IPVS hooks); in the VM it changes no one's machine.
DEFAULT_MODULES = (
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_sh",
    "ip_vs_dh",
    "nf_conntrack",
    "vrf",
    "sch_netem",
    "dummy",
    "veth",
    "bridge",
    "br_netfilter",
    "vxlan",
    "nf_tables",
)
# Host variables a command usually needs inside (the VM's init starts with a bare environment).
PASS_ENV = ("CI", "TERM", "COLUMNS", "NO_COLOR", "PYTEST_ADDOPTS", "LANG", "LC_ALL")
SETUP_HINT = "run `sudo scripts/setup` (it installs qemu-system-x86, busybox-static, linux-image-amd64 and virtme-ng)"
KVM_SLOWNESS = 2.0  # a guest shares the host's CPUs with the host's own work
EXIT_NO_RESULT = 125  # the VM never reported the command's exit code (it did not boot, or crashed)
EXIT_TIMEOUT = 124  # the command ran past --timeout and was ended (as timeout(1) says it)
TIMED_OUT = "timed-out"  # the marker the guest's watchdog leaves in `results` when it fires
# After --timeout, how long the host waits for the guest to end the command and power off by
# itself before it stops QEMU (a wedged guest kernel runs no watchdog): an emulated boot
# (about a minute), the diagnostics, the grace before KILL and the power-off, with room.
HOST_GRACE = 300.0
# The guest's watchdog, run as `sh -c WATCHDOG netlab-vm-watchdog PID SECONDS MARKER`. It
# looks each second whether the command still runs and ends by itself once it does not (no
# one has to kill it: a kill sent as it starts, before its setsid, would miss its group and
# leave its sleep behind). When it fires it shows where every process waits in the kernel (wchan, and the stacks of
# the blocked ones, `D`), the kernel's list of blocked tasks (SysRq w) and its last
# messages; SIGABRT then makes a Python command print every thread's stack
# (PYTHONFAULTHANDLER is set in the guest) before the command's session is ended.
# (dash's kill takes `-PGID` but not `--`.)
WATCHDOG = r"""pid=$1 secs=$2 marker=$3
waited=0
while kill -0 "$pid" 2>/dev/null; do
  [ "$waited" -ge "$secs" ] && break
  sleep 1; waited=$((waited + 1))
done
kill -0 "$pid" 2>/dev/null || exit 0
: > "$marker"
echo "netlab vm: the command ran past its $secs s (--timeout); what the guest shows, then the command is ended:"
ps -eo pid,ppid,stat,wchan:32,etime,args | grep -v ' \[.*\]$'
for p in $(ps -eo pid=,stat= | awk '$2 ~ /^D/ {print $1}'); do
  echo "-- kernel stack of $p ($(cat /proc/$p/comm 2>/dev/null)), blocked:"; cat /proc/$p/stack 2>/dev/null
done
for p in $(ps -s "$pid" -o pid=); do
  echo "-- kernel stack of $p ($(cat /proc/$p/comm 2>/dev/null)):"; cat /proc/$p/stack 2>/dev/null
done
echo w > /proc/sysrq-trigger 2>/dev/null
echo "-- the kernel's last messages:"; dmesg | tail -n 150
kill -ABRT "$pid" 2>/dev/null; sleep 5
kill -TERM "-$pid" 2>/dev/null; sleep 10
kill -KILL "-$pid" 2>/dev/null
"""


@dataclass
class VmRun:
    argv: list[str]
    results: Path
    kernel: str
    kvm: bool
    modules: tuple[str, ...] = DEFAULT_MODULES
    memory: str = "2G"
    cpus: int = 2
    cwd: str = field(default_factory=os.getcwd)
    rwdirs: tuple[str, ...] = ()
    timeout: float | None = None  # seconds the command may run in the guest (None: no limit)


def find_kernel() -> str:
    """NETLAB_VM_KERNEL, else the newest distribution kernel image in /boot (Debian's
    linux-image-amd64 puts one there; the running kernel of these machines is not in /boot)."""
    chosen = os.environ.get("NETLAB_VM_KERNEL")
    if chosen:
        if not os.path.isfile(chosen):
            raise UsageError(f"NETLAB_VM_KERNEL={chosen} is not a file")
        return chosen
    images = glob.glob("/boot/vmlinuz-*")
    if not images:
        raise MissingFeature(f"no kernel image in /boot to boot in the VM; {SETUP_HINT}")

    def version(path: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", os.path.basename(path))]

    return max(images, key=version)


def kvm_usable() -> bool:
    return kvm_choice()[0]


def kvm_choice() -> tuple[bool, str]:
    """Whether to use KVM, and why (said at boot: emulation is 10× slower, so say why)."""
    forced = os.environ.get("NETLAB_VM_KVM")
    if forced in ("0", "1"):
        return forced == "1", f"NETLAB_VM_KVM={forced}"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, "/dev/kvm missing"
    except OSError as e:
        return False, f"/dev/kvm present but not usable: {e.strerror}"
    os.close(fd)
    # /dev/kvm can exist in a guest whose CPU hides VMX/SVM; nested KVM there hangs.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError as e:
        return False, f"/dev/kvm present but /proc/cpuinfo unreadable ({e.strerror})"
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return False, "/dev/kvm present but this CPU has no VMX/SVM (nested KVM would hang)"
    return True, "/dev/kvm usable and the CPU has VMX/SVM"


def find_vng() -> str:
    """vng from the venv netlab runs in (setup installs virtme-ng there), else PATH."""
    here = Path(sys.executable).with_name("vng")
    found = str(here) if here.exists() else shutil.which("vng")
    if not found:
        raise MissingFeature(f"virtme-ng (vng) is not installed; {SETUP_HINT}")
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")):
        if not shutil.which(tool) and not os.path.exists(f"/usr/bin/{tool}"):
            raise MissingFeature(f"{tool} is not installed (Debian package {package}); {SETUP_HINT}")
    return found


def guest_script(run: VmRun) -> str:
    """The shell script the VM runs: load modules, enter the working directory with the
    passed-through environment, run the command, record its exit code in `results`."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("NETLAB_") and k != "NETLAB_VM_KERNEL"})
    # Emulated, everything (Python's start above all) runs ~10× slower: fixed waits scale.
    env.setdefault(deadline.ENV, f"{deadline.EMULATED_SLOWNESS if not run.kvm else KVM_SLOWNESS:g}")
    env.update(
        {
            "NETLAB_IN_VM": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/root",
            "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
    )
    if run.timeout is not None:
        env["PYTHONFAULTHANDLER"] = "1"  # the watchdog's SIGABRT prints a Python command's stacks
    rc_file = shlex.quote(str(run.results / "exit-code"))
    lines = [
        "#!/bin/sh",
        "# written by netlab vm run",
        f"rm -f {rc_file} {shlex.quote(str(run.results / TIMED_OUT))}",
        "missing=''",
        f"for m in {' '.join(map(shlex.quote, run.modules))}; do",
        '  modprobe -q "$m" 2>/dev/null || missing="$missing $m"',
        "done",
        '[ -z "$missing" ] || echo "netlab vm: could not load kernel modules:$missing" >&2',
        # /run is a fresh tmpfs in the VM: ip netns and netlab need their directories.
        "mkdir -p /run/netns /run/netlab",
        f"cd {shlex.quote(run.cwd)} || exit {EXIT_NO_RESULT}",
        *[f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())],
        *(watched(run) if run.timeout is not None else [shlex.join(run.argv), "rc=$?"]),
        f"echo $rc > {rc_file}",
        "exit $rc",
    ]
    return "\n".join(lines) + "\n"


def watched(run: VmRun) -> list[str]:
    """The command in a session of its own (so the watchdog can end all it started), with
    the watchdog beside it; rc is EXIT_TIMEOUT if the watchdog fired. (After `wait $pid`
    the command is reaped, so the watchdog's `kill -0` sees it gone.)"""
    assert run.timeout is not None
    marker = shlex.quote(str(run.results / TIMED_OUT))
    return [
        f"setsid {shlex.join(run.argv)} &",
        "pid=$!",
        f"setsid sh -c {shlex.quote(WATCHDOG)} netlab-vm-watchdog $pid {run.timeout:.0f} {marker} &",
        "watchdog=$!",
        "wait $pid",
        "rc=$?",
        "wait $watchdog",  # a second at most, or until it has ended the command's session
        f"[ -e {marker} ] && rc={EXIT_TIMEOUT}",
    ]


def vng_argv(run: VmRun, vng: str, script: Path) -> list[str]:
    argv = [
        vng,
        "--run",
        run.kernel,
        "--user",
        "root",
        "--memory",
        run.memory,
        "--cpus",
        str(run.cpus),
        "--rwdir",
        str(run.results),
    ]
    for d in run.rwdirs:
        argv += ["--rwdir", d]
    if not run.kvm:
        argv.append("--disable-kvm")
    return [*argv, "--exec", f"sh {shlex.quote(str(script))}"]


def run_in_vm(run: VmRun) -> int:
    """Boot, run, return the command's exit code (EXIT_NO_RESULT if the VM gave none)."""
    vng = find_vng()
    run.results.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".netlab-vm-", suffix=".sh", dir=run.results)
    script = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(guest_script(run))
        env = dict(os.environ)
        env["PATH"] = f"{Path(vng).parent}:{env.get('PATH', '/usr/bin:/bin')}"  # vng calls virtme-run
        # The console is copied through a pipe: QEMU reopens a stdout that is a file and
        # would truncate a log the caller is writing (seen: CI's log lost its first part).
        with subprocess.Popen(
            vng_argv(run, vng, script),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ) as proc:
            assert proc.stdout is not None
            try:
                if not _copy_console(proc.stdout.fileno(), _host_budget(run)):
                    _stop(proc)
                    sys.stderr.write(
                        f"netlab vm: the VM was still running {_host_budget(run):.0f} s after boot began "
                        f"(--timeout {run.timeout:.0f} s, and its watchdog did not end it: the guest is "
                        "wedged); it was stopped\n"
                    )
                    return EXIT_TIMEOUT
                proc.wait()
            except BaseException as err:
                _stop(proc)
                signum = interrupts.signum_of(err)
                if signum is None:
                    raise
                raise Interrupted(
                    f"vm run interrupted by {interrupts.name_of(signum)}; the VM was stopped "
                    "(nothing of it outlives it)",
                    signum,
                ) from None
        rc_file = run.results / "exit-code"
        if (run.results / TIMED_OUT).exists():
            sys.stderr.write(f"netlab vm: the command ran past --timeout {run.timeout:.0f} s and was ended\n")
        try:
            return int(rc_file.read_text().strip())
        except (OSError, ValueError):
            sys.stderr.write(
                f"netlab vm: the VM did not report the command's exit code (vng exited "
                f"{proc.returncode}); see its console output above\n"
            )
            return EXIT_NO_RESULT
    finally:
        script.unlink(missing_ok=True)


def _host_budget(run: VmRun) -> float | None:
    """Seconds from boot until the host stops a VM that did not end by itself."""
    return None if run.timeout is None else run.timeout + HOST_GRACE


def _copy_console(fd: int, budget: float | None) -> bool:
    """The VM's console to our stdout until it closes (True), or until `budget` seconds
    have passed (False)."""
    end = None if budget is None else time.monotonic() + budget
    while True:
        if end is not None:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
        chunk = os.read(fd, 65536)
        if not chunk:
            return True
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End vng and its QEMU (our child, by PID): TERM, then KILL."""
    with interrupts.deferred():
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
