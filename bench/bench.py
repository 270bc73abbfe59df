"""netlab benchmark: one bridge + N pod namespaces, built three ways.

Entry points (bash wrappers next to this file):

    bench/run      [--sizes N ...] [--repeat K] [--only floor,ipscript,ipbatch,netlab,served]
    bench/profile  N [--down-profile]
    bench/run --check-signal [--sizes ...]   (validates the "kernel done" signal)

See bench/README.md for what is measured and how.

Safety: every object lives in a network namespace this script creates; nothing
is done in the root network namespace. All namespaces are named with a random
run id and removed again on exit, on error and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import queue
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from labrun import comm, compile_bytecode, netns_workers, serving

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IP = shutil.which("ip") or "/usr/sbin/ip"


def _find_netlab() -> Path:
    """This checkout's venv first, then next to the running Python, then PATH."""
    for candidate in (REPO / ".venv" / "bin" / "netlab", Path(sys.executable).parent / "netlab"):
        if candidate.exists():
            return candidate
    found = shutil.which("netlab")
    return Path(found) if found else REPO / ".venv" / "bin" / "netlab"


NETLAB = _find_netlab()
VENV_PY = NETLAB.parent / "python"
FLOOR = HERE / "floor.py"
METHODS = ("floor", "ipscript", "ipbatch", "netlab", "served")

RUN = secrets.token_hex(2)  # 4 hex chars, part of every name we create
clock = time.perf_counter


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# bookkeeping / cleanup


class Registry:
    """Everything this process created, so it can be removed on any exit."""

    def __init__(self) -> None:
        self.prefixes: list[str] = [f"bh-{RUN}", f"bp-{RUN}", f"bw-{RUN}", f"bs-{RUN}", f"bf-{RUN}"]
        self.labs: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def ours(self, name: str) -> bool:
        if any(name.startswith(p) for p in self.prefixes):
            return True
        return any(name.startswith(lab + ".") for lab in self.labs)


REG = Registry()


def list_netns() -> list[str]:
    out = subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def force_delete(names: Sequence[str]) -> None:
    if not names:
        return
    data = "".join(f"netns del {n}\n" for n in names)
    subprocess.run([IP, "-force", "-batch", "-"], input=data, text=True, capture_output=True)


def cleanup_all() -> list[str]:
    """Stop our children (by PID), `netlab down` our labs, delete our namespaces."""
    for p in REG.procs:
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=5)
            except Exception:
                try:
                    p.kill()
                    p.wait(timeout=5)
                except Exception:
                    pass
    left = [n for n in list_netns() if REG.ours(n)]
    labs_left = {lab for lab in REG.labs for n in left if n.startswith(lab + ".")}
    for lab in sorted(labs_left):
        if NETLAB.exists():
            with contextlib.suppress(Exception):
                subprocess.run([str(NETLAB), "down", lab], capture_output=True, timeout=300)
    # a child killed mid-way (e.g. `ip netns add` orphaned by Ctrl-C) may still
    # create something just after we looked: look again until nothing is left
    for _ in range(5):
        left = [n for n in list_netns() if REG.ours(n)]
        if not left:
            break
        force_delete(left)
        time.sleep(0.3)
    return [n for n in list_netns() if REG.ours(n)]


def _sig_to_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    # SIGINT too: when started in the background SIGINT may be inherited as ignored
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _sig_to_interrupt)


def sh(
    cmd: Sequence[str],
    *,
    timeout: float | None = None,
    check: bool = True,
    inp: str | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=inp, cwd=cwd, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> rc={r.returncode}: {tail(r.stderr or r.stdout)}")
    return r


def tail(s: str, n: int = 400) -> str:
    s = (s or "").strip()
    return s if len(s) <= n else "…" + s[-n:]


def slab_net_namespace() -> int | None:
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------
# "kernel done" signal: sentinel namespaces + the ordered netns workqueue


class DownWatcher:
    """Detects when the kernel has finished destroying deleted namespaces.

    Background (net/core/net_namespace.c): `ip netns del` only drops a
    reference; the namespace goes onto cleanup_list and cleanup_net() runs on
    the single-threaded (ordered) "netns" workqueue.  Each run takes everything
    queued so far, unregisters the devices, runs all pernet exit hooks,
    rcu_barrier()s and frees.  The struct net itself is freed only at the *next*
    run (defer_free_list), so the net_namespace slab is not a usable signal.

    Signal used here:
      1. Barrier.  A watcher namespace W lives for the whole run and
         `ip -n W monitor link` reports link deletions in W.  A sentinel
         namespace S1 holds one end of a veth pair whose other end (s<k>) is
         in W.  Right after the down command returns, S1 is deleted; when W
         reports s<k> deleted, S1's cleanup run is unregistering devices, so
         every namespace queued before S1 (the whole lab) is in that run or
         an earlier one: nothing of the lab is still waiting in the queue.
      2. Worker idle.  Then poll the kworker that executes the netns work
         ("+netns" in its comm) until it stops; a full /proc scan confirms no
         worker runs netns work.  That moment is "down_s".
      3. Cross-check (recorded as down_s2_s, not in the table): delete a second
         sentinel S2 and wait for its veth to vanish.  S2 is processed by a
         later run of the ordered work item, i.e. only after S1's run finished
         completely, so down_s2_s is an upper bound (it includes one extra
         cleanup run for S2, see `idle`).
    If the kworker names don't show "+netns" (other kernels), down_s falls back
    to the step-3 upper bound.
    """

    def __init__(self) -> None:
        self.w = f"bw-{RUN}"
        self.k = 0
        self.events: queue.Queue[tuple[float, str, bool]] = queue.Queue()
        sh([IP, "netns", "add", self.w])
        self.proc = subprocess.Popen(
            [IP, "-n", self.w, "-o", "monitor", "link"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        REG.procs.append(self.proc)
        threading.Thread(target=self._reader, daemon=True).start()
        self.live = False
        self.idle: dict[str, Any] = {}
        self.kworker_signal = False  # set by calibrate() if "+netns" workers are visible

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = clock()
            parts = line.split()
            if not parts:
                continue
            deleted = parts[0] == "Deleted"
            tok = parts[2] if deleted and len(parts) > 2 else parts[1] if len(parts) > 1 else ""
            name = tok.rstrip(":").split("@")[0]
            self.events.put((t, name, deleted))

    def _wait(self, dev: str, deleted: bool, timeout: float) -> float:
        end = clock() + timeout
        while True:
            left = end - clock()
            if left <= 0:
                raise TimeoutError(f"no {'deletion' if deleted else 'creation'} event for {dev}")
            try:
                t, name, dele = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if name == dev and dele == deleted:
                return t

    def arm(self) -> tuple[str, str]:
        self.k += 1
        ns, dev = f"bs-{RUN}-{self.k}", f"s{self.k}"
        sh([IP, "netns", "add", ns])
        sh([IP, "-n", self.w, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns])
        if not self.live:  # make sure the monitor is subscribed before we rely on it
            self._wait(dev, False, 10)
            self.live = True
        return ns, dev

    def fire(self, sentinel: tuple[str, str], timeout: float) -> float:
        ns, dev = sentinel
        sh([IP, "netns", "del", ns])
        return self._wait(dev, True, timeout)

    @staticmethod
    def worker_idle(timeout: float) -> tuple[float, bool]:
        """Wait until no kworker runs netns work; returns (time, saw_busy)."""
        end = clock() + timeout
        saw = False
        while True:
            busy = netns_workers()
            t = clock()
            if not busy:
                return t, saw
            saw = True
            pid = busy[0]
            while True:
                c = comm(pid)
                t = clock()
                if not c or "+netns" not in c:
                    break
                if t > end:
                    raise TimeoutError("netns worker still busy")
                time.sleep(0.0005)

    def wait_done(self, t0: float, s1: tuple[str, str], s2: tuple[str, str], timeout: float) -> dict[str, float]:
        """Times relative to t0 (the start of the down command)."""
        r: dict[str, float] = {}
        r["down_s1_s"] = self.fire(s1, timeout) - t0
        t_idle, _ = self.worker_idle(timeout)
        r["down_idle_s"] = t_idle - t0
        r["down_s2_s"] = self.fire(s2, timeout) - t0
        r["down_s"] = r["down_idle_s"] if self.kworker_signal else r["down_s2_s"]
        return r

    def quiesce(self, timeout: float = 300) -> None:
        """Let the previous cleanup run (e.g. the tail of S2's) finish first."""
        if self.kworker_signal or not self.idle:
            self.worker_idle(timeout)

    def calibrate(self, n: int = 3) -> dict[str, Any]:
        """Idle cost of the signal itself; detects whether "+netns" workers are visible."""
        a, b, c = [], [], []
        for _ in range(n):
            s1, s2 = self.arm(), self.arm()
            self.quiesce()
            t0 = clock()
            a.append(self.fire(s1, 60) - t0)
            t_idle, saw = self.worker_idle(60)
            b.append(t_idle - t0)
            self.kworker_signal |= saw
            c.append(self.fire(s2, 60) - t0)
        self.idle = {
            "s1_s": statistics.median(a),
            "s1_idle_s": statistics.median(b),
            "s1_idle_s2_s": statistics.median(c),
            "kworker_signal": self.kworker_signal,
        }
        return self.idle

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run([IP, "netns", "del", self.w], capture_output=True)


# --------------------------------------------------------------------------
# lab generation


def pod_addr(i: int) -> str:
    n = i + 2
    return f"10.0.{n // 256}.{n % 256}"


class Build:
    """One build+teardown of N pods by one method."""

    method = ""

    def __init__(self, n: int, rep: int, tmp: Path) -> None:
        self.n, self.rep = n, rep
        self.dir = tmp / f"{self.method}-{n}-{rep}"
        self.dir.mkdir(parents=True, exist_ok=True)

    # names of pod 0 / pod N-1 namespaces, for verification
    def pod_ns(self, i: int) -> str:
        raise NotImplementedError

    def prepare(self) -> None: ...
    def up(self) -> None: ...
    def down(self) -> None: ...

    def leftovers(self) -> list[str]:
        raise NotImplementedError


class IpBuild(Build):
    def __init__(self, n: int, rep: int, tmp: Path) -> None:
        super().__init__(n, rep, tmp)
        tag = f"{RUN}{self.method[2]}{n}x{rep}"  # e.g. 1a2fs500x1 / 1a2fb500x1
        self.host = f"bh-{tag}"
        self.pfx = f"bp-{tag}-"

    def pod_ns(self, i: int) -> str:
        return f"{self.pfx}{i}"

    def leftovers(self) -> list[str]:
        return [x for x in list_netns() if x == self.host or x.startswith(self.pfx)]


class IpScript(IpBuild):
    """Plain shell script, one `ip` command per step (tutorial style)."""

    method = "ipscript"

    def prepare(self) -> None:
        h = self.host
        up = [
            "#!/bin/sh",
            "set -e",
            f"ip netns add {h}",
            f"ip -n {h} link add br0 type bridge",
            f"ip -n {h} addr add 10.0.0.1/16 dev br0",
            f"ip -n {h} link set br0 up",
        ]
        for i in range(self.n):
            p = self.pod_ns(i)
            up += [
                f"ip netns add {p}",
                f"ip -n {h} link add p{i} type veth peer name eth0 netns {p}",
                f"ip -n {h} link set p{i} master br0 up",
                f"ip -n {p} link set lo up",
                f"ip -n {p} link set eth0 up",
                f"ip -n {p} addr add {pod_addr(i)}/16 dev eth0",
                f"ip -n {p} route add default via 10.0.0.1",
            ]
        down = ["#!/bin/sh"] + [f"ip netns del {self.pod_ns(i)}" for i in range(self.n)]
        down += [f"ip netns del {h}"]
        (self.dir / "up.sh").write_text("\n".join(up) + "\n")
        (self.dir / "down.sh").write_text("\n".join(down) + "\n")

    def up(self) -> None:
        sh(["sh", str(self.dir / "up.sh")])

    def down(self) -> None:
        sh(["sh", str(self.dir / "down.sh")])


class IpBatch(IpBuild):
    """`ip -batch` files.

    up:   1) `ip -batch ns.batch`           netns add (host + all pods)
          2) `ip -n HOST -batch host.batch` bridge, address, veths (peer into pod ns), master+up
          3) `ip -n POD -batch pod.batch`   per pod (lo up, eth0 up, addr, default route);
                                            one process per pod, 2 running in parallel
    down: `ip -batch down.batch`            netns del for all
    (`netns add` can't go into the host batch: under `ip -n HOST` ip runs in a
    private slave mount namespace, so the /run/netns bind mounts it creates
    are invisible to everyone else.)
    """

    method = "ipbatch"
    parallel = 2

    def prepare(self) -> None:
        h = self.host
        ns = [f"netns add {h}"] + [f"netns add {self.pod_ns(i)}" for i in range(self.n)]
        host = ["link add br0 type bridge", "addr add 10.0.0.1/16 dev br0", "link set br0 up"]
        for i in range(self.n):
            host += [f"link add p{i} type veth peer name eth0 netns {self.pod_ns(i)}", f"link set p{i} master br0 up"]
        (self.dir / "ns.batch").write_text("\n".join(ns) + "\n")
        (self.dir / "host.batch").write_text("\n".join(host) + "\n")
        for i in range(self.n):
            (self.dir / f"pod{i}.batch").write_text(
                "link set lo up\nlink set eth0 up\n"
                f"addr add {pod_addr(i)}/16 dev eth0\nroute add default via 10.0.0.1\n"
            )
        down = [f"netns del {self.pod_ns(i)}" for i in range(self.n)] + [f"netns del {h}"]
        (self.dir / "down.batch").write_text("\n".join(down) + "\n")

    def up(self) -> None:
        sh([IP, "-batch", str(self.dir / "ns.batch")])
        sh([IP, "-n", self.host, "-batch", str(self.dir / "host.batch")])

        def pod(i: int) -> str | None:
            r = subprocess.run(
                [IP, "-n", self.pod_ns(i), "-batch", str(self.dir / f"pod{i}.batch")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            return None if r.returncode == 0 else f"pod{i}: rc={r.returncode} {r.stderr[:200]}"

        # one `ip -n POD -batch` process per pod, `parallel` of them at a time
        with ThreadPoolExecutor(max_workers=self.parallel) as ex:
            errors = [e for e in ex.map(pod, range(self.n)) if e]
        if errors:
            raise RuntimeError("; ".join(errors[:3]))

    def down(self) -> None:
        sh([IP, "-batch", str(self.dir / "down.batch")])


class Floor(IpBuild):
    """bench/floor.py: raw netlink by hand, 2 worker processes; what no tool can beat."""

    method = "floor"

    def __init__(self, n: int, rep: int, tmp: Path) -> None:
        super().__init__(n, rep, tmp)
        self.pfx = f"bf-{RUN}{n}x{rep}-"  # pods PFX<i>, host PFXhost
        self.host = f"{self.pfx}host"

    def _run(self, verb: str) -> None:
        sh([sys.executable, str(FLOOR), verb, "--prefix", self.pfx.rstrip("-"), "--n", str(self.n)])

    def up(self) -> None:
        self._run("up")

    def down(self) -> None:
        self._run("down")


class Netlab(Build):
    """netlab up FILE / netlab down LAB."""

    method = "netlab"

    def __init__(self, n: int, rep: int, tmp: Path, timeout: float) -> None:
        super().__init__(n, rep, tmp)
        self.lab = f"bench{n}-{RUN}-{rep}"
        self.file = self.dir / f"{self.lab}.yaml"
        self.timeout = timeout
        REG.labs.append(self.lab)

    def pod_ns(self, i: int) -> str:
        return f"{self.lab}.pod{i}"

    def leftovers(self) -> list[str]:
        return [x for x in list_netns() if x.startswith(self.lab + ".")]

    def prepare(self) -> None:
        self.file.write_text(lab_yaml(self.lab, self.n))

    # Run by this process, also while the benchmark's `netlab serve` runs for `served`.
    env: ClassVar[dict[str, str]] = {**os.environ, "NETLAB_SERVER": "0"}

    def up(self) -> None:
        sh([str(NETLAB), "up", str(self.file)], timeout=self.timeout, cwd=str(self.dir), env=self.env)

    def down(self) -> None:
        sh([str(NETLAB), "down", self.lab], timeout=self.timeout, cwd=str(self.dir), env=self.env)


class Served(Netlab):
    """netlab up FILE / netlab down LAB, run by the benchmark's `netlab serve` (a child
    forked from a process that has the pipeline imported: no start-up, no imports)."""

    method = "served"
    env: ClassVar[dict[str, str]] = {k: v for k, v in os.environ.items() if k != "NETLAB_SERVER"}


def lab_yaml(lab: str, n: int) -> str:
    out = [f"name: {lab}", "nodes:", "  host:", "    links:", "      br0: {kind: bridge, addresses: [10.0.0.1/16]}"]
    out += [f"      p{i}: {{peer: pod{i}:eth0, master: br0}}" for i in range(n)]
    for i in range(n):
        out += [
            f"  pod{i}:",
            "    links:",
            f"      eth0: {{addresses: [{pod_addr(i)}/16]}}",
            "    routes:",
            "      - {to: default, via: 10.0.0.1}",
        ]
    return "\n".join(out) + "\n"


PING_PY = r"""
import os, socket, struct, sys, time
dst = sys.argv[1]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
ident = os.getpid() & 0xFFFF
pkt = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"netlab-bench"
pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(pkt, (dst, 0))
end = time.monotonic() + 1.0
while (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        data, addr = s.recvfrom(2048)
    except TimeoutError:
        break
    h = (data[0] & 0x0F) * 4
    typ, _, _, i, _ = struct.unpack("!BBHHH", data[h:h + 8])
    if typ == 0 and i == ident and addr[0] == dst:
        print("reply from", dst)
        sys.exit(0)
print("no reply from", dst)
sys.exit(1)
"""


def verify(b: Build) -> None:
    """Cheap correctness check: default route in pod 0, address on pod N-1, one ping."""
    p0, plast = b.pod_ns(0), b.pod_ns(b.n - 1)
    r = sh([IP, "-n", p0, "-4", "route", "show", "default"])
    if "default via 10.0.0.1" not in r.stdout:
        raise RuntimeError(f"{p0}: no default route via 10.0.0.1 ({r.stdout.strip()!r})")
    target = pod_addr(b.n - 1) if b.n > 1 else "10.0.0.1"
    if b.n > 1:
        r = sh([IP, "-n", plast, "-4", "-o", "addr", "show", "dev", "eth0"])
        if f"{target}/16" not in r.stdout:
            raise RuntimeError(f"{plast}: eth0 lacks {target}/16")
    last = ""
    # iputils ping if installed, else a raw-socket ICMP echo in Python (same namespace)
    ping = ["ping", "-c1", "-W1", "-q", target] if shutil.which("ping") else [sys.executable, "-c", PING_PY, target]
    for _ in range(3):
        r = sh([IP, "netns", "exec", p0, *ping], check=False)
        if r.returncode == 0:
            return
        last = tail(r.stdout + r.stderr, 200)
    raise RuntimeError(f"ping {p0} -> {target} failed: {last}")


# --------------------------------------------------------------------------
# measurement


def netlab_available() -> tuple[bool, str]:
    if not NETLAB.exists():
        return False, f"{NETLAB} not found"
    try:
        r = subprocess.run([str(NETLAB), "up", "--help"], capture_output=True, text=True, timeout=60)
    except Exception as e:
        return False, f"`netlab up --help`: {e}"
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return False, f"`netlab up --help` rc={r.returncode}: {lines[-1] if lines else ''}"[:300]
    compile_bytecode(str(VENV_PY if VENV_PY.exists() else sys.executable))
    return True, ""


def measure(b: Build, watcher: DownWatcher, timeout: float) -> dict[str, Any]:
    res: dict[str, Any] = {
        "method": b.method,
        "n": b.n,
        "rep": b.rep,
        "ok": False,
        "up_s": math.nan,
        "down_cmd_s": math.nan,
        "down_s": math.nan,
        "down_s1_s": math.nan,
        "down_idle_s": math.nan,
        "down_s2_s": math.nan,
        "error": None,
    }
    b.prepare()
    res["slab_before"] = slab_net_namespace()
    foreign0 = {x for x in list_netns() if not REG.ours(x)}
    watcher.quiesce()
    try:
        t0 = clock()
        b.up()
        res["up_s"] = clock() - t0
    except BaseException as e:
        res["error"] = f"up failed: {e}"
        log(f"  {b.method} N={b.n}: up FAILED: {e}")
        if isinstance(e, KeyboardInterrupt):
            raise
        with contextlib.suppress(Exception):
            b.down()
        force_delete(b.leftovers())
        return res
    try:
        verify(b)
        res["verify"] = "ok"
    except Exception as e:
        res["verify"] = f"FAILED: {e}"
        log(f"  {b.method} N={b.n}: verify FAILED: {e}")
    s1, s2 = watcher.arm(), watcher.arm()
    watcher.quiesce()
    try:
        t0 = clock()
        b.down()
        res["down_cmd_s"] = clock() - t0
        res.update(watcher.wait_done(t0, s1, s2, timeout))
    except BaseException as e:
        res["error"] = f"down failed: {e}"
        log(f"  {b.method} N={b.n}: down FAILED: {e}")
        if isinstance(e, KeyboardInterrupt):
            raise
    left = b.leftovers()
    if left:
        res["leftover_namespaces"] = len(left)
        res["error"] = (res["error"] or "") + f" {len(left)} namespaces left after down"
        log(f"  {b.method} N={b.n}: {len(left)} namespaces left after down, force-deleting")
        force_delete(left)
    res["slab_after"] = slab_net_namespace()
    foreign1 = {x for x in list_netns() if not REG.ours(x)}
    if foreign0 != foreign1:  # someone else created/deleted namespaces meanwhile
        res["disturbed"] = (
            f"others' namespaces changed during the measurement: "
            f"{len(foreign0 - foreign1)} removed, {len(foreign1 - foreign0)} added"
        )
        log(f"  {b.method} N={b.n}: WARNING {res['disturbed']}")
    res["ok"] = res["error"] is None and res.get("verify") == "ok"
    return res


def fmt(x: float, nd: int = 2) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def med(vals: list[float]) -> float:
    v = [x for x in vals if x is not None and not math.isnan(x)]
    return statistics.median(v) if v else math.nan


def _clean_up(watcher: DownWatcher | None, tmp: Path) -> bool:
    """Remove everything a bench mode made; False (and a warning) if a namespace stayed."""
    if watcher is not None:
        watcher.close()
    left = cleanup_all()
    shutil.rmtree(tmp, ignore_errors=True)
    if left:
        log(f"WARNING: could not remove namespaces: {left}")
    return not left


def make_build(method: str, n: int, rep: int, tmp: Path, timeout: float) -> Build:
    if method in ("netlab", "served"):
        return (Served if method == "served" else Netlab)(n, rep, tmp, timeout)
    kinds: dict[str, type[Build]] = {"floor": Floor, "ipscript": IpScript, "ipbatch": IpBatch}
    return kinds[method](n, rep, tmp)


def cmd_run(args: argparse.Namespace) -> int:
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    for m in only:
        if m not in METHODS:
            log(f"unknown method {m!r}; choose from {','.join(METHODS)}")
            return 2
    sizes = sorted(set(args.sizes))
    if any(n < 1 or n > 65000 for n in sizes):
        log("sizes must be 1..65000")
        return 2
    wants_netlab = "netlab" in only or "served" in only
    nl_ok, nl_why = netlab_available() if wants_netlab else (False, "not selected")
    if wants_netlab and not nl_ok:
        print(f"netlab: unavailable ({nl_why})", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="netlab-bench-"))
    results: list[dict[str, Any]] = []
    watcher: DownWatcher | None = None
    rc = 0
    meta: dict[str, Any] = {
        "run": RUN,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "iproute2": sh([IP, "-V"], check=False).stdout.strip(),
        "python": sys.version.split()[0],
        "sizes": sizes,
        "repeat": args.repeat,
        "only": only,
        "netlab_available": nl_ok,
        "netlab_unavailable_reason": nl_why or None,
        "ipbatch_pod_parallelism": IpBatch.parallel,
        "loadavg_at_start": os.getloadavg(),
    }
    foreign = [x for x in list_netns() if not REG.ours(x)]
    meta["foreign_namespaces_at_start"] = len(foreign)
    if foreign:
        log(
            f"note: {len(foreign)} namespaces of someone else exist (e.g. {foreign[0]}); "
            "concurrent namespace work on this machine disturbs the timings"
        )
    stack = contextlib.ExitStack()
    try:
        served_log = stack.enter_context(serving([str(NETLAB)], tmp)) if "served" in only and nl_ok else None
        watcher = DownWatcher()
        idle = watcher.calibrate()
        meta["down_signal_idle"] = idle
        log(
            f"run {RUN}: down signal at idle: s1 vanished {idle['s1_s'] * 1000:.1f} ms, "
            f"netns worker idle {idle['s1_idle_s'] * 1000:.1f} ms, "
            f"s2 vanished {idle['s1_idle_s2_s'] * 1000:.1f} ms; "
            f"kworker signal {'usable' if idle['kworker_signal'] else 'NOT visible (using s2)'}"
        )
        for n in sizes:
            timeout = max(120.0, n * 1.0)
            for rep in range(1, args.repeat + 1):
                for m in only:
                    if m in ("netlab", "served") and not nl_ok:
                        continue
                    b = make_build(m, n, rep, tmp, timeout)
                    log(f"  {m} N={n} rep={rep} ...")
                    r = measure(b, watcher, timeout)
                    results.append(r)
                    log(
                        f"    up {fmt(r['up_s'])}s down_cmd {fmt(r['down_cmd_s'])}s "
                        f"down {fmt(r['down_s'])}s verify={r.get('verify')} "
                        f"{'ERROR: ' + str(r['error']) if r['error'] else ''}"
                    )
        if served_log is not None:
            ran = served_log.read_text().count(" → exit ")
            meta["served_commands"] = ran
            log(f"served: the server ran {ran} commands (2 per served build)")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        rc = 130
    except Exception as e:
        log(f"error: {e}; cleaning up")
        rc = 1
    finally:
        stack.close()
        if not _clean_up(watcher, tmp):
            rc = rc or 1

    meta["foreign_namespaces_at_end"] = len([x for x in list_netns() if not REG.ours(x)])
    report(results, sizes, only, meta, nl_ok, nl_why)
    return rc


def report(
    results: list[dict[str, Any]], sizes: list[int], only: list[str], meta: dict[str, Any], nl_ok: bool, nl_why: str
) -> None:
    agg: dict[tuple[str, int], dict[str, float]] = {}
    for m in METHODS:
        for n in sizes:
            rs = [r for r in results if r["method"] == m and r["n"] == n]
            if not rs:
                continue
            agg[(m, n)] = {
                k: med([r[k] for r in rs if r["error"] is None])
                for k in ("up_s", "down_cmd_s", "down_s", "down_s1_s", "down_idle_s", "down_s2_s")
            }
            agg[(m, n)]["runs"] = len(rs)
            agg[(m, n)]["disturbed"] = sum(bool(r.get("disturbed")) for r in rs)
            agg[(m, n)]["failed"] = sum(r["error"] is not None for r in rs)
            agg[(m, n)]["unverified"] = sum(r.get("verify") != "ok" for r in rs if r["error"] is None)

    hdr = f"{'method':<9} {'N':>5} {'up_s':>8} {'down_cmd_s':>11} {'down_s':>8} {'up_ms/pod':>10}"
    lines = [
        "",
        f"results (run {RUN}, kernel {meta['kernel']}, {meta['cpus']} cpus"
        + (f", median of {meta['repeat']}" if meta["repeat"] > 1 else "")
        + ")",
        hdr,
        "-" * len(hdr),
    ]
    for n in sizes:
        for m in METHODS:
            a = agg.get((m, n))
            if a is None:
                continue
            per = a["up_s"] / n * 1000 if not math.isnan(a["up_s"]) else math.nan
            note = f"  ({int(a['failed'])}/{int(a['runs'])} failed)" if a["failed"] else ""
            if a["disturbed"]:
                note += f"  (disturbed by others' namespace work {int(a['disturbed'])}/{int(a['runs'])})"
            if a["unverified"]:
                note += f"  (verify FAILED {int(a['unverified'])}/{int(a['runs'])})"
            lines.append(
                f"{m:<9} {n:>5} {fmt(a['up_s']):>8} {fmt(a['down_cmd_s']):>11} "
                f"{fmt(a['down_s']):>8} {fmt(per, 1):>10}{note}"
            )
    if "netlab" in only and not nl_ok:
        lines.append(f"netlab: unavailable ({nl_why})")

    def ratio(a: float, b: float) -> str:
        if math.isnan(a) or math.isnan(b) or b == 0:
            return "nan"
        return f"{a / b:.2f}"

    nan = {"up_s": math.nan, "down_s": math.nan, "down_cmd_s": math.nan}
    lines += [
        "",
        "ratios (down = until the kernel is done)",
        f"{'N':>5} {'netlab/floor up':>16} {'down':>6} {'netlab/ipbatch up':>18} {'down':>6} "
        f"{'netlab/ipscript up':>19} {'down':>6}",
    ]
    ratios: dict[str, Any] = {}
    for n in sizes:
        nl = agg.get(("netlab", n), nan)
        ib = agg.get(("ipbatch", n), nan)
        isc = agg.get(("ipscript", n), nan)
        fl = agg.get(("floor", n), nan)
        row = {
            "netlab/floor_up": ratio(nl["up_s"], fl["up_s"]),
            "netlab/floor_down": ratio(nl["down_s"], fl["down_s"]),
            "netlab/ipbatch_up": ratio(nl["up_s"], ib["up_s"]),
            "netlab/ipbatch_down": ratio(nl["down_s"], ib["down_s"]),
            "netlab/ipscript_up": ratio(nl["up_s"], isc["up_s"]),
            "netlab/ipscript_down": ratio(nl["down_s"], isc["down_s"]),
            "served/floor_up": ratio(agg.get(("served", n), nan)["up_s"], fl["up_s"]),
            "served/ipbatch_down": ratio(agg.get(("served", n), nan)["down_s"], ib["down_s"]),
        }
        ratios[str(n)] = row
        lines.append(
            f"{n:>5} {row['netlab/floor_up']:>16} {row['netlab/floor_down']:>6} "
            f"{row['netlab/ipbatch_up']:>18} {row['netlab/ipbatch_down']:>6} "
            f"{row['netlab/ipscript_up']:>19} {row['netlab/ipscript_down']:>6}"
            + (f"   served/floor up {row['served/floor_up']}" if ("served", n) in agg else "")
            + (f", served/ipbatch down {row['served/ipbatch_down']}" if ("served", n) in agg else "")
        )

    big = max(sizes)
    kv = [f"pods={big}"]
    for m in ("netlab", "ipbatch", "ipscript", "floor", *(["served"] if "served" in only else [])):
        a = agg.get((m, big), nan)
        kv += [f"{m}_up_s={fmt(a['up_s'])}", f"{m}_down_s={fmt(a['down_s'])}"]

    out = {
        **meta,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": results,
        "summary": {f"{m}/{n}": v for (m, n), v in agg.items()},
        "ratios": ratios,
        "last_line": " ".join(kv),
    }
    resdir = HERE / "results"
    try:
        resdir.mkdir(exist_ok=True)
        path = resdir / (dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{RUN}.json")
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        lines.append(f"\njson: {path.relative_to(REPO)}")
    except OSError as e:
        lines.append(f"\njson: not written ({e})")
    lines.append(" ".join(kv))
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------
# signal check (validation experiment for README)


class KworkerPoller(threading.Thread):
    """Independent reference: full /proc scans every ~2 ms, recording the
    times at which some kworker was seen executing netns work ("+netns")."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.busy: list[float] = []  # sample times (end of the scan) that saw a busy worker

    def run(self) -> None:
        while not self.stop.is_set():
            if netns_workers():
                self.busy.append(clock())
            time.sleep(0.002)

    def last_busy_before(self, t: float) -> float:
        seen = [x for x in self.busy if x < t]
        return max(seen) if seen else math.nan


def cmd_check_signal(args: argparse.Namespace) -> int:
    """Validate the "kernel done" signal (see README).

    For each size and each candidate signal: build N pods with ipbatch, run the
    down command, wait for the candidate signal, then immediately delete a
    probe sentinel and time until its veth vanishes.  If the signal really
    means "the netns queue is drained", the probe latency equals the idle
    latency of one sentinel; otherwise it includes the remaining backlog.
    Variant "poller" is an independent reference: a thread scans /proc every
    ~2 ms for a kworker running netns work; its signal is the last time one
    was seen, once none has been seen for 1 s.
    """
    tmp = Path(tempfile.mkdtemp(prefix="netlab-bench-"))
    watcher = None
    rc = 0
    k = 0
    try:
        watcher = DownWatcher()
        idle = watcher.calibrate(5)
        print(
            f"idle (median of 5): s1 vanished {idle['s1_s'] * 1000:.1f} ms, worker idle "
            f"{idle['s1_idle_s'] * 1000:.1f} ms, s2 vanished {idle['s1_idle_s2_s'] * 1000:.1f} ms,"
            f" kworker signal visible: {idle['kworker_signal']}"
        )
        print(
            "  probe = latency of a sentinel deleted right after the signal "
            f"(idle: {idle['s1_s'] * 1000:.1f} ms); times from the start of the down command"
        )
        for n in sorted(set(args.sizes)):
            for variant in ("cmd", "slab", "s1", "s1+idle", "s1+idle+s2", "poller"):
                k += 1
                b = IpBatch(n, k, tmp)
                b.prepare()
                slab0 = slab_net_namespace()
                b.up()
                s1, s2, s3 = watcher.arm(), watcher.arm(), watcher.arm()
                watcher.quiesce()
                poll = KworkerPoller()
                if variant == "poller":
                    poll.start()
                t0 = clock()
                b.down()
                tc = clock() - t0
                sig = tc
                note = ""
                if variant == "slab":
                    end = t0 + 10
                    while (slab_net_namespace() or 0) > (slab0 or 0) and clock() < end:
                        time.sleep(0.002)
                    sig = clock() - t0
                    if (slab_net_namespace() or 0) > (slab0 or 0):
                        note = f"slab never back to {slab0} (gave up after 10 s)"
                        sig = math.nan
                if variant.startswith("s1"):
                    sig = watcher.fire(s1, 300) - t0
                if variant.startswith("s1+idle"):
                    sig = watcher.worker_idle(300)[0] - t0
                if variant == "s1+idle+s2":
                    sig = watcher.fire(s2, 300) - t0
                if variant == "poller":
                    while not poll.busy or clock() - poll.busy[-1] < 1.0:
                        time.sleep(0.05)
                    poll.stop.set()
                    poll.join()
                    sig = poll.busy[-1] - t0
                slab_sig = slab_net_namespace()
                tp = clock()
                probe = watcher.fire(s3, 300) - tp
                for sen in (s1, s2):  # tidy sentinels we did not fire
                    if sen[0] in list_netns():
                        watcher.fire(sen, 300)
                watcher.quiesce()
                print(
                    f"N={n:<4} {variant:<11} cmd {tc:6.3f}s  signal {fmt(sig, 3):>6}s  "
                    f"probe {probe * 1000:7.1f} ms  slab {slab0}->{slab_sig}  {note}",
                    flush=True,
                )
    except KeyboardInterrupt:
        rc = 130
    finally:
        _clean_up(watcher, tmp)
    return rc


# --------------------------------------------------------------------------
# profile


def cmd_profile(args: argparse.Namespace) -> int:
    import pstats

    ok, why = netlab_available()
    if not ok:
        print(f"netlab: unavailable ({why})")
        return 1
    n = args.n
    tmp = Path(tempfile.mkdtemp(prefix="netlab-prof-"))
    lab = f"prof{n}-{RUN}"
    REG.labs.append(lab)
    f = tmp / f"{lab}.yaml"
    f.write_text(lab_yaml(lab, n))
    py = str(VENV_PY if VENV_PY.exists() else sys.executable)
    out = Path(args.output) if args.output else HERE / "results" / f"profile-up-{n}-{RUN}.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    rc = 0
    try:
        if args.threads:  # every thread's profile merged (netlab works in threads)
            prof = [py, str(Path(__file__).resolve()), "_prof_threads", str(out)]
        else:  # plain cProfile: main thread only
            prof = [py, "-m", "cProfile", "-o", str(out), "-m", "netlab.cli"]
        t0 = clock()
        r = subprocess.run([*prof, "up", str(f)], cwd=str(tmp), capture_output=True, text=True)
        el = clock() - t0
        print(
            f"netlab up ({n} pods) under cProfile{' (all threads)' if args.threads else ''}: "
            f"rc={r.returncode} {el:.2f}s; profile: {out}"
        )
        if r.returncode != 0:
            print(tail(r.stderr or r.stdout, 2000))
            rc = 1
        if out.exists():
            st = pstats.Stats(str(out))
            st.sort_stats("cumulative").print_stats(args.top)
        cmd = [str(NETLAB), "down", lab]
        dout = out.with_name(out.name.replace("profile-up", "profile-down"))
        if args.down_profile:
            prof[prof.index(str(out))] = str(dout)
            cmd = [*prof, "down", lab]
        t0 = clock()
        r = subprocess.run(cmd, cwd=str(tmp), capture_output=True, text=True)
        print(f"netlab down: rc={r.returncode} {clock() - t0:.2f}s")
        if r.returncode != 0:
            print(tail(r.stderr or r.stdout, 2000))
            rc = 1
        if args.down_profile and dout.exists():
            pstats.Stats(str(dout)).sort_stats("cumulative").print_stats(args.top)
    except KeyboardInterrupt:
        rc = 130
    finally:
        left = cleanup_all()
        shutil.rmtree(tmp, ignore_errors=True)
        if left:
            log(f"WARNING: could not remove namespaces: {left}")
    return rc


# --------------------------------------------------------------------------


def prof_threads(out: str, argv: list[str]) -> int:
    """Run `netlab.cli` with one cProfile profiler per thread; dump the merged stats."""
    import cProfile
    import pstats
    import runpy

    profs: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: Any) -> None:  # first profile event in a new thread
        p = cProfile.Profile()
        with lock:
            profs.append(p)
        p.enable()  # replaces this hook for the thread

    main_prof = cProfile.Profile()
    profs.append(main_prof)
    threading.setprofile(start)
    sys.argv = ["netlab", *argv]
    rc: int = 0
    main_prof.enable()
    try:
        runpy.run_module("netlab.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        main_prof.disable()
        threading.setprofile(None)
        stats: pstats.Stats | None = None
        for p in profs:
            try:
                st = pstats.Stats(p)
            except TypeError:  # profiler that recorded nothing
                continue
            if stats is None:
                stats = st
            else:
                stats.add(st)
        if stats is not None:
            stats.dump_stats(out)
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_prof_threads"]:
        return prof_threads(argv[1], argv[2:])
    ap = argparse.ArgumentParser(prog="bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="benchmark ipscript / ipbatch / netlab")
    r.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument(
        "--only", default=",".join(METHODS), help="comma-separated subset of floor,ipscript,ipbatch,netlab,served"
    )
    r.add_argument(
        "--check-signal", action="store_true", help="instead of benchmarking, validate the 'kernel done' signal"
    )
    p = sub.add_parser("profile", help="cProfile `netlab up` for N pods, then `netlab down`")
    p.add_argument("n", type=int, nargs="?", default=500)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--output", help="where to keep the .prof file")
    p.add_argument("--down-profile", action="store_true", help="profile `netlab down` too")
    p.add_argument(
        "--threads",
        action="store_true",
        help="merge the profiles of all threads (plain cProfile sees only the "
        "main thread, which mostly waits in join())",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (creates network namespaces)")
        return 2
    install_signal_handlers()
    if args.cmd == "profile":
        return cmd_profile(args)
    if args.repeat < 1:
        log("--repeat must be >= 1")
        return 2
    if args.check_signal:
        return cmd_check_signal(args)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
