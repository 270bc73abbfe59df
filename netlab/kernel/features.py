"""Kernel capability probe behind `netlab doctor` and a lab's `requires:`.

Every feature is probed by *doing* the thing (create the link, add the qdisc, resolve
the netlink family) rather than by reading /proc/config.gz or lsmod: config files
lie about what a container or a hardened host actually lets us do, and doing it also
triggers the kernel's module autoload.

All probing happens in ONE forked child that first moves itself into a brand-new
private network namespace (unshare(CLONE_NEWNET)).  Whatever the probes create dies
with that namespace when the child exits, so nothing in the host namespace is ever
touched and nothing needs cleaning up.  The child streams one JSON line per feature
back over a pipe; the parent enforces a deadline and reports anything it did not hear
about as not ok.

The probes take the paths `netlab up` and `netlab check` take, so that a feature doctor
calls ok is one they can use: links are made from plan ops by the same encoders and
netlink socket as the driver's (encode.py, nlsock.py), the netns probe asks for a route
and reads the rules with the route observer (routes.py), conntrack is read by the same
reader as a check's (conntrack.py), IPVS is dumped as a check dumps it (ipvs.py), an
ipset is made as `up` makes one (ipset.py), a netem qdisc as a link end's `netem:` is (tc.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gzip
import json
import os
import platform
import select
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

from netlab import interrupts
from netlab.deadline import scaled
from netlab.lab.values import Feature

__all__ = [
    "FEATURES",
    "TOOLS",
    "FeatureStatus",
    "ToolStatus",
    "normalize_feature",
    "probe_features",
    "probe_tools",
]

# The features a lab may `require:`, in the order doctor lists them: the lab model's own list.
FEATURES: tuple[str, ...] = get_args(Feature)

# Module / Kconfig spellings people naturally write in `requires:`.
_ALIASES: dict[str, str] = {
    "ip_vs": "ipvs",
    "nf_tables": "nftables",
    "sch_netem": "netem",
    "nf_conntrack": "conntrack",
    "ip_set": "ipset",
    "br-netfilter": "br_netfilter",
    "bridge-netfilter": "br_netfilter",
}

# tool -> Debian package that ships it
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "conntrack": "conntrack",
    "ipset": "ipset",
    "tcpdump": "tcpdump",
    "socat": "socat",
}

# Under emulation (`netlab vm run` without KVM, on a busy machine) the probe child's
# imports alone took more than 10 s: every feature then read as missing. So: × slowness.
DEFAULT_TIMEOUT = scaled(10.0)

# Names of the objects the child creates (inside its private namespace only).
PROBE_PREFIX = "nlprobe"

_CLONE_NEWNET = 0x40000000

_GET_KERNEL = (
    "Run the lab under a kernel that has it: `netlab vm run -- netlab check --up FILE [--variant V]` "
    "builds, checks and takes down the lab under Debian's stock kernel (linux-image-amd64) over this "
    "machine's filesystem (after `sudo scripts/setup`), or use the Vagrant "
    "box (vagrant/README.md)"
)

# Features no kernel facility loads on demand, and netlab will not load: why, for the hint.
_NOT_AUTOLOADED = {
    "br_netfilter": "netlab does not load it: it makes the bridges of the machine's own namespace pass "
    "bridged traffic through iptables too",
}

# feature -> what it needs from the kernel: (Kconfig symbol, module or None if bool-only).
# Used only to word the hint once a probe has failed.
_NEEDS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "netns": (("CONFIG_NET_NS", None),),
    "veth": (("CONFIG_VETH", "veth"),),
    "bridge": (("CONFIG_BRIDGE", "bridge"),),
    "dummy": (("CONFIG_DUMMY", "dummy"),),
    "vxlan": (("CONFIG_VXLAN", "vxlan"),),
    "vrf": (("CONFIG_NET_VRF", "vrf"),),
    "ipvs": (("CONFIG_IP_VS", "ip_vs"),),
    "nftables": (("CONFIG_NF_TABLES", "nf_tables"), ("CONFIG_NF_TABLES_INET", None)),
    "conntrack": (
        ("CONFIG_NF_CONNTRACK", "nf_conntrack"),
        ("CONFIG_NF_CT_NETLINK", "nf_conntrack_netlink"),
        ("CONFIG_NFT_CT", "nft_ct"),
    ),
    "ipset": (("CONFIG_IP_SET", "ip_set"), ("CONFIG_IP_SET_HASH_IP", "ip_set_hash_ip")),
    "br_netfilter": (("CONFIG_BRIDGE_NETFILTER", "br_netfilter"),),
    "netem": (("CONFIG_NET_SCH_NETEM", "sch_netem"),),
    "ipip": (("CONFIG_NET_IPIP", "ipip"),),
    "gre": (("CONFIG_NET_IPGRE", "ip_gre"),),
    "gretap": (("CONFIG_NET_IPGRE", "ip_gre"),),
    "ip6tnl": (("CONFIG_IPV6_TUNNEL", "ip6_tunnel"),),
    "ip6gre": (("CONFIG_IPV6_GRE", "ip6_gre"),),
    "geneve": (("CONFIG_GENEVE", "geneve"),),
    "vlan": (("CONFIG_VLAN_8021Q", "8021q"),),
    "bridge_vlan": (("CONFIG_BRIDGE_VLAN_FILTERING", None),),
}

# Rule selectors of newer kernels: no module or Kconfig symbol gives them, only a release.
_SINCE = {
    "rule_dscp": ("6.13", "FRA_DSCP: an IPv4 rule's full DSCP (dscp above 7)"),
    "rule_flowlabel": ("6.14", "FRA_FLOWLABEL: an IPv6 rule's flow label"),
    "rule_port_mask": ("6.15", "FRA_SPORT_MASK/FRA_DPORT_MASK: masked ports"),
    "rule_dscp_mask": ("6.15", "FRA_DSCP_MASK: a masked DSCP"),
}


@dataclass(frozen=True)
class FeatureStatus:
    name: str  # one of FEATURES
    ok: bool
    detail: str  # what was tried / what the kernel said
    hint: str  # empty when ok; otherwise how to get it


@dataclass(frozen=True)
class ToolStatus:
    name: str
    ok: bool
    path: str  # empty when not found
    hint: str  # empty when ok; otherwise "apt-get install <package>"


def normalize_feature(name: str) -> str | None:
    """Canonical feature name for `name` (accepting module aliases), or None if unknown."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in FEATURES else None


def probe_tools() -> list[ToolStatus]:
    # Non-root shells on Debian often lack the sbin dirs in PATH, yet that is where
    # ip/nft/iptables live; don't report them missing just because of PATH.
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    out: list[ToolStatus] = []
    for tool, package in TOOLS.items():
        path = shutil.which(tool, path=search)
        if path:
            out.append(ToolStatus(tool, True, path, ""))
        else:
            out.append(ToolStatus(tool, False, "", f"apt-get install {package}"))
    return out


def probe_features(names: Iterable[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> list[FeatureStatus]:
    """Probe the requested features (all of FEATURES when None); results in FEATURES order.

    Raises ValueError for a name that is neither a feature nor an alias.
    """
    with probing_ahead(preload=False) as probe:
        return probe(names, timeout=timeout)


Probe = Callable[..., list[FeatureStatus]]  # probe_features' signature


class AheadProbe:
    """probe_features, its child forked ahead (probing_ahead); and what else that child read."""

    def __init__(self, ahead: _Ahead | None) -> None:
        self._ahead = ahead

    def __call__(self, names: Iterable[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> list[FeatureStatus]:
        wanted = _resolve(names)
        if not wanted:
            return []
        if self._ahead is None:
            # unshare(CLONE_NEWNET) and link creation need CAP_SYS_ADMIN/CAP_NET_ADMIN.
            return [
                FeatureStatus(name, False, "needs root (not probed)", "run as root, e.g. sudo netlab doctor")
                for name in wanted
            ]
        raw = self._ahead.collect(wanted, timeout)
        return [_to_status(name, raw[name]) for name in wanted]

    def fresh_sysctl_files(self) -> list[str] | None:
        """The files under /proc/sys/net (relative to /proc/sys) of the child's namespace as
        fresh, once it answered a probe (None before, or if it could not read them)."""
        return self._ahead.sysctl_files if self._ahead is not None else None


@contextlib.contextmanager
def probing_ahead(preload: bool = True) -> Iterator[AheadProbe]:
    """probe_features with its child forked now, not when it is called: the child imports
    what its probes use (`preload`: the route reader, ~0.1 s) and reads a fresh namespace's
    sysctl files while the caller loads and plans the lab, then waits for the names.
    Leaving the block ends a child never asked."""
    ahead = _Ahead(preload) if os.geteuid() == 0 else None
    try:
        yield AheadProbe(ahead)
    finally:
        if ahead is not None:
            ahead.close()


def _resolve(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(FEATURES)
    if isinstance(names, str):  # a lone string would otherwise iterate per character
        names = [names]
    chosen: set[str] = set()
    unknown: list[str] = []
    for name in names:
        canon = normalize_feature(name)
        if canon is None:
            unknown.append(name)
        else:
            chosen.add(canon)
    if unknown:
        raise ValueError(f"unknown kernel feature(s): {', '.join(unknown)} (known: {', '.join(FEATURES)})")
    return [f for f in FEATURES if f in chosen]


# --------------------------------------------------------------------------- parent side


class _Ahead:
    """The probing child: forked at once, told later which features to probe (one line of
    names on a pipe; none, or the pipe closed, and it exits)."""

    def __init__(self, preload: bool) -> None:
        host_ns = _netns_inode()
        names_r, self.names_w = os.pipe()
        self.rfd, wfd = os.pipe()
        pid = interrupts.fork()
        if pid == 0:  # child: never return into the caller's stack
            code = 1
            try:
                os.close(self.names_w)
                os.close(self.rfd)
                _child_ahead(names_r, wfd, host_ns, preload)
                code = 0
            finally:
                os._exit(code)
        os.close(names_r)
        os.close(wfd)
        self.pid: int | None = pid
        self.sysctl_files: list[str] | None = None  # told after the names' answers

    def collect(self, wanted: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Send the names, collect the child's JSON lines, never wait past `timeout`."""
        assert self.pid is not None, "one probe per child"
        pid, rfd, self.pid = self.pid, self.rfd, None
        with contextlib.suppress(OSError):  # a child that died early: told below
            os.write(self.names_w, (" ".join(wanted) + "\n").encode())
        os.close(self.names_w)
        results: dict[str, dict[str, Any]] = {}
        buf = b""
        eof = False
        deadline = time.monotonic() + timeout
        try:
            while not eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([rfd], [], [], left)
                if not ready:
                    break
                chunk = os.read(rfd, 65536)
                if not chunk:
                    eof = True
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    with contextlib.suppress(ValueError):
                        item = json.loads(line)
                        if item.get("name") in wanted:
                            results[item["name"]] = item
                        elif isinstance(item.get("sysctl_files"), list):
                            self.sysctl_files = [str(f) for f in item["sysctl_files"]]
        finally:
            os.close(rfd)
            if not eof:
                # Hung (or interrupted): kill only our own child, then reap it.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)

        if len(results) < len(wanted):
            if not eof:
                why = f"no answer from the probe child within {timeout:g} s (it hung before/in this one)"
            else:
                why = f"probe child exited ({_describe_status(status)}) before reporting this probe"
            for name in wanted:
                results.setdefault(name, {"name": name, "ok": False, "detail": why, "kind": "error"})
        return results

    def close(self) -> None:
        """End a child that was never asked: no names, and it exits."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        os.close(self.names_w)
        os.close(self.rfd)
        os.waitpid(pid, 0)


# What nearly every lab needs: the child probes these as soon as it is forked ahead, while
# the parent still loads the lab, so their answers wait for the names (~10 ms of an `up`).
_LIKELY = ("netns", "veth", "bridge")


def _child_ahead(names_r: int, wfd: int, host_ns: int, preload: bool) -> None:
    """The child: import what the probes use and probe the likely features while the
    parent still loads the lab, then answer the names the parent sends."""
    # The child's only output channel is the pipe; inherited warning filters (pytest
    # runs with "error") must not turn a library DeprecationWarning into a failed probe.
    warnings.resetwarnings()
    warnings.simplefilter("ignore")
    if preload:
        with contextlib.suppress(Exception):  # a probe that needs it reports its own failure
            import netlab.kernel.routes  # noqa: F401
    refused = _enter_probe_namespace(host_ns)
    fresh = _fresh_sysctl_files() if preload and refused is None else None  # before any probe adds a link
    early = {name: _run_probe(name) for name in _LIKELY} if preload and refused is None else {}
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(names_r, 65536)
        if not chunk:
            return  # the parent closed the pipe without asking
        data += chunk
    for name in data.decode().split():
        ok, detail, kind = refused(name) if refused is not None else early.get(name) or _run_probe(name)
        line = json.dumps({"name": name, "ok": ok, "detail": detail, "kind": kind})
        os.write(wfd, line.encode() + b"\n")
    if fresh is not None:
        os.write(wfd, json.dumps({"sysctl_files": fresh}).encode() + b"\n")


def _fresh_sysctl_files() -> list[str] | None:
    """/proc/sys/net's files as the child's fresh namespace shows them, for the lab's
    sysctl names: read here, while the parent loads, they spare it a namespace of its own
    (made just after this child's, it waits ~20 ms for the kernel to free this one)."""
    from netlab.kernel.sysctl import net_files

    try:
        return net_files()
    except OSError:
        return None


def _enter_probe_namespace(host_ns: int) -> Callable[[str], _Result] | None:
    """Move the child into a network namespace of its own to probe in: None when it did,
    else what each probe answers instead."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        detail = f"unshare(CLONE_NEWNET): {_errtext(ctypes.get_errno())}"
        return lambda name: (False, detail if name == "netns" else f"not probed: {detail}", "netns")
    if _netns_inode() == host_ns:  # paranoia: never probe in the host namespace
        return lambda _name: (False, "unshare returned 0 but the namespace did not change", "error")
    return None


def _run_probe(name: str) -> _Result:
    try:
        return _PROBES[name]()
    except Exception as e:
        return False, f"{type(e).__name__}: {e}", "error"


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
        return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _to_status(name: str, raw: dict[str, Any]) -> FeatureStatus:
    ok = bool(raw.get("ok"))
    detail = str(raw.get("detail", ""))
    if ok:
        return FeatureStatus(name, True, detail, "")
    return FeatureStatus(name, False, detail, _hint(name, str(raw.get("kind", "kernel"))))


def _hint(name: str, kind: str) -> str:
    if kind == "library":  # the only optional Python dependency
        return "apt-get install python3-nftables (and make the venv with --system-site-packages)"
    if kind == "error":
        return "probe failed unexpectedly; see detail (rerun netlab doctor)"
    if kind == "netns":
        return "unshare(CLONE_NEWNET) needs root with CAP_SYS_ADMIN (not a locked-down container)"
    return kernel_hint(name, kernel_config(), available_modules())


def kernel_hint(name: str, config: dict[str, str] | None, modules: frozenset[str] | None) -> str:
    """One-line advice for a feature the kernel refused.

    `config` is the running kernel's Kconfig (None if unreadable); `modules` the module
    names installed for it (None if /lib/modules/<release> is absent).
    """
    if name == "drop_reasons":
        return (
            "netlab trace then names no kernel drop reason and gives each hop's route decision instead; the "
            "reasons need tracefs (CONFIG_TRACING) and skb:kfree_skb with its reason (Linux 5.17+)"
        )
    if name in _SINCE:
        since, what = _SINCE[name]
        return (
            f"this kernel ({platform.release()}) has no {what}, which Linux {since} added; select the "
            f"packets another way (nftables marks them, the rule selects `fwmark:`), or run under a newer kernel"
        )
    needs = _NEEDS[name]
    mods = [m for _, m in needs if m]
    if name in _NOT_AUTOLOADED and any(
        (config or {}).get(sym) == "m" or (modules is not None and mod in modules) for sym, mod in needs
    ):
        return f"modprobe {' '.join(mods)} ({_NOT_AUTOLOADED[name]}), or run the lab in the VM: `netlab vm run`"
    if config is not None:
        for sym, mod in needs:
            value = config.get(sym)
            if value in ("y", "m"):
                continue
            if mod and modules is not None and mod in modules:
                return f"modprobe {mod} (module is installed but did not load)"
            return f"this kernel has no {name} (built without {sym}). {_GET_KERNEL}"
        # Config says it's there, so it's a module that failed to (auto)load.
        return f"modprobe {' '.join(mods)} (kernel config has it, but the probe failed)"
    if modules is not None:
        missing = [m for m in mods if m not in modules]
        if not missing:
            return f"modprobe {' '.join(mods)}"
    what = f"modprobe {mods[0]} failed / not built" if mods else "not built"
    return f"this kernel has no {name} ({what}). {_GET_KERNEL}"


@lru_cache(maxsize=1)
def kernel_config() -> dict[str, str] | None:
    """The running kernel's Kconfig as {symbol: value}; unset symbols are absent."""
    release = platform.release()
    text: str | None = None
    with contextlib.suppress(OSError, EOFError), gzip.open("/proc/config.gz", "rt") as f:
        text = f.read()
    if text is None:
        with contextlib.suppress(OSError):
            text = Path(f"/boot/config-{release}").read_text()
    if text is None:
        return None
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            sym, _, value = line.partition("=")
            config[sym] = value.strip('"')
    return config


@lru_cache(maxsize=1)
def available_modules() -> frozenset[str] | None:
    """Module names (loadable or built in) listed for the running kernel, None if no tree."""
    base = Path("/lib/modules") / platform.release()
    names: set[str] = set()
    found = False
    for index in ("modules.dep", "modules.builtin"):
        with contextlib.suppress(OSError):
            for line in (base / index).read_text().splitlines():
                path = line.split(":", 1)[0]
                stem = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
                names.add(stem.replace("-", "_"))
            found = True
    return frozenset(names) if found else None


def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


# --------------------------------------------------------------------------- child side
# Everything below runs only in the forked child, after it left the host namespace.


def _errtext(code: int) -> str:
    # errorcode maps 95 to ENOTSUP; the kernel (and `ip`) call it EOPNOTSUPP.
    name = "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code, str(code))
    return f"{os.strerror(code)} ({name})"


def _exc_text(e: BaseException) -> str:
    """'Message (ENAME)' for netlink/OS errors; falls back to the exception text."""
    code = getattr(e, "code", None)  # pyroute2 NetlinkError
    if not isinstance(code, int):
        code = getattr(e, "errno", None)
    if isinstance(code, int) and code > 0:
        return _errtext(code)
    return f"{type(e).__name__}: {e}"


_Result = tuple[bool, str, str]  # ok, detail, kind ("kernel" | "library" | "error")


def _try(what: str, action: Callable[[], object], missing: tuple[int, str] | None = None) -> _Result:
    """Run `action`; `missing` = (errno, meaning) spells out the "kernel lacks it" answer."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        action()
    except (NetlinkError, OSError) as e:
        detail = f"{what}: {_exc_text(e)}"
        if missing is not None and getattr(e, "code", getattr(e, "errno", None)) == missing[0]:
            detail += f" - {missing[1]}"
        return False, detail, "kernel"
    return True, what, "kernel"


PROBE_NS = "netlab-doctor"  # what the probes' ops name as their namespace: the child's own


def _netlink_result(what: str, failures: list[Any], missing: tuple[int, str] | None = None) -> _Result:
    """A netlink request's outcome as a probe result, words as _try gives them."""
    if not failures:
        return True, what, "kernel"
    code = failures[0].errno
    detail = f"{what}: {_errtext(code)}"
    if missing is not None and code == missing[0]:
        detail += f" - {missing[1]}"
    return False, detail, "kernel"


def _apply_rtnl(what: str, op: Any, missing: tuple[int, str] | None = None) -> _Result:
    """Make `op` as the driver does: its rtnetlink message from netlab.kernel.encode, sent
    on a netlab.kernel.nlsock socket of this (the child's own) namespace."""
    from netlab.kernel import encode
    from netlab.kernel.nlsock import NetlinkSocket

    fds: list[int] = []

    def own_netns_fd(_name: str) -> int:
        fds.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY))
        return fds[-1]

    sock = NetlinkSocket()
    try:
        indexes = sock.link_indexes()
        return _netlink_result(what, sock.request([encode.request(op, indexes.__getitem__, own_netns_fd)]), missing)
    finally:
        sock.close()
        for fd in fds:
            os.close(fd)


def _link(link: Any) -> _Result:
    """Make a link of this kind (a netlab.plan.ops LinkType) in the child's namespace."""
    from netlab.plan.ops import CreateLink

    kind = link.kind
    op = CreateLink(PROBE_NS, name=f"{PROBE_PREFIX}-{kind}"[:15], type=link, up=False)
    return _apply_rtnl(f"ip link add type {kind}", op, (errno.EOPNOTSUPP, f"link kind {kind!r} unknown to this kernel"))


def _probe_netns() -> _Result:
    """The namespace exists (unshare worked); and rtnetlink answers a route query and a
    rule dump there, through the observer `netlab check` uses."""
    from netlab.kernel import routes
    from netlab.observations import RouteQuery
    from netlab.plan.ops import SetLink

    ok, detail, kind = _apply_rtnl("ip link set lo up", SetLink(PROBE_NS, name="lo"))
    if not ok:
        return ok, f"unshare(CLONE_NEWNET) ok; {detail}", kind
    try:
        [answer] = routes.route_get_here([RouteQuery("127.0.0.1")])
        rules = routes.rules_here()
    except OSError as e:
        return False, f"unshare(CLONE_NEWNET) ok; route get 127.0.0.1: {_exc_text(e)}", "kernel"
    return True, f"unshare(CLONE_NEWNET) ok; route get {answer.text}; {len(rules)} rules", "kernel"


def _probe_veth() -> _Result:
    from netlab.plan.ops import VethType

    return _link(VethType(peer_ns=PROBE_NS, peer_name=f"{PROBE_PREFIX}-peer"))


def _probe_bridge() -> _Result:
    from netlab.plan.ops import BridgeType

    return _link(BridgeType())


def _probe_dummy() -> _Result:
    from netlab.plan.ops import DummyType

    return _link(DummyType())


def _probe_vxlan() -> _Result:
    from netlab.plan.ops import VxlanType

    return _link(VxlanType(vni=42, port=4789))


def _probe_vrf() -> _Result:
    from netlab.plan.ops import VrfType

    return _link(VrfType(table=10))


def _probe_ipvs() -> _Result:
    from netlab.kernel import ipvs

    # Resolving the family (the kernel autoloads ip_vs on this lookup) and dumping the
    # services, as a check reads them.
    return _try(
        'resolve generic netlink family "IPVS"',
        lambda: ipvs.services_here(missing_ok=False),
        (errno.ENOENT, "family not registered, i.e. no ip_vs"),
    )


def _nft() -> tuple[Any, str]:
    try:
        import nftables
    except ImportError as e:
        return None, f"import nftables: {e}"
    return nftables.Nftables(), ""


def _nft_cmd(nft: Any, cmd: str) -> _Result:
    rc, _out, err = nft.cmd(cmd)
    if rc == 0:
        return True, f"nft {cmd}", "kernel"
    msg = " ".join(str(err).split()) or f"rc {rc}"
    return False, f"nft {cmd}: {msg}", "kernel"


def _probe_nftables() -> _Result:
    nft, why = _nft()
    if nft is None:
        return False, why, "library"
    return _nft_cmd(nft, f"add table inet {PROBE_PREFIX}")


def _probe_conntrack() -> _Result:
    from netlab.kernel import conntrack

    # ctnetlink, read as a check reads it (the count first; the dump when there are entries)
    ok, detail, kind = _try("ctnetlink conntrack count", conntrack.conntrack_here)
    if not ok:
        return ok, detail, kind
    # A `ct state` rule on a base chain makes nftables take a conntrack reference in this
    # netns, i.e. packets really get tracked; skip if nftables itself is unusable.
    nft, _ = _nft()
    if nft is None:
        return True, f"{detail} (nft ct rule not tried: no python3-nftables)", "kernel"
    table = f"inet {PROBE_PREFIX}_ct"
    for cmd in (
        f"add table {table}",
        f"add chain {table} c {{ type filter hook input priority 0; }}",
        f"add rule {table} c ct state established accept",
    ):
        ok, what, kind = _nft_cmd(nft, cmd)
        if not ok:
            return ok, what, kind
    return True, f"{detail}; nft rule 'ct state established accept'", "kernel"


def _probe_ipset() -> _Result:
    from netlab.kernel import ipset
    from netlab.plan.ops import CreateIpset

    what = "ipset create hash:ip"
    failed = ipset.apply_here([CreateIpset(PROBE_NS, name=PROBE_PREFIX, type="hash:ip")])
    if failed:
        return False, f"{what}: {failed[0][1].removeprefix('ipset create: ')}", "kernel"
    return True, what, "kernel"


def _probe_br_netfilter() -> _Result:
    # Its sysctls are per namespace and exist once the module is loaded (built in: always);
    # nothing in this fresh namespace could load it, and the probe does not try.
    path = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    if os.path.exists(path):
        return True, "net.bridge.bridge-nf-call-iptables exists (br_netfilter is loaded)", "kernel"
    return False, "no net.bridge.* sysctls: br_netfilter is not loaded", "kernel"


def _probe_netem() -> _Result:
    from netlab.plan.ops import SetNetem

    # lo exists in every fresh namespace, so netem does not depend on dummy/veth.
    return _apply_rtnl(
        "tc qdisc replace dev lo root netem delay 1ms",
        SetNetem(PROBE_NS, dev="lo", delay=1000),
        (errno.ENOENT, "qdisc kind 'netem' unknown to this kernel (no sch_netem)"),
    )


def _probe_tunnel(kind: str, remote: str) -> _Result:
    from netlab.plan.ops import TunnelType

    return _link(TunnelType(kind, remote=remote))


def _probe_geneve() -> _Result:
    from netlab.plan.ops import GeneveType

    return _link(GeneveType(vni=42, remote="192.0.2.1"))


def _probe_vlan() -> _Result:
    from netlab.plan.ops import BridgeType, CreateLink, VlanType

    # on a bridge: lo refuses VLANs (NETIF_F_VLAN_CHALLENGED) with the errno of an unknown kind
    parent = f"{PROBE_PREFIX}-vbr"
    ok, detail, kind = _apply_rtnl("ip link add type bridge", CreateLink(PROBE_NS, name=parent, type=BridgeType()))
    if not ok:
        return False, f"not probed: {detail}", kind
    return _link(VlanType(dev=parent, id=42))


def _probe_bridge_vlan() -> _Result:
    from netlab.plan.ops import BridgeType, CreateLink

    op = CreateLink(PROBE_NS, name=f"{PROBE_PREFIX}-vf", type=BridgeType(vlan_filtering=True), up=False)
    return _apply_rtnl(
        "ip link add type bridge vlan_filtering 1", op, (errno.EOPNOTSUPP, "this kernel's bridges filter no VLANs")
    )


def _rule_selector(what: str, field: str, **selectors: Any) -> _Result:
    """Add a rule with the selector (as `up` would) and read it back: a kernel that does
    not know the attribute ignores it and makes a rule that selects every packet."""
    from netlab.kernel import routes
    from netlab.plan.ops import AddRule

    op = AddRule(PROBE_NS, priority=4242, table=4242, **selectors)
    ok, detail, kind = _apply_rtnl(f"ip rule add {what}", op)
    if not ok:
        return ok, detail, kind
    if not any(r.priority == 4242 and getattr(r, field) is not None for r in routes.rules_here()):
        return False, f"ip rule add {what}: the kernel made the rule without it (an unknown attribute)", "kernel"
    return True, f"ip rule add {what}", "kernel"


def _probe_drop_reasons() -> _Result:
    """Mount tracefs privately, as `netlab trace` does, and look for its tracepoints."""
    from netlab.kernel import tracefs

    try:
        root = tracefs.private_tracefs()
    except OSError as e:
        return False, f"private tracefs mount: {e.strerror or e}", "kernel"
    try:
        missing = tracefs.missing_events(root)
    finally:
        os.close(root)
    if missing:
        return False, f"tracepoints missing: {', '.join(missing)}", "kernel"
    return True, "private tracefs: " + ", ".join(tracefs.EVENTS), "kernel"


_PROBES: dict[str, Callable[[], _Result]] = {
    "netns": _probe_netns,
    "veth": _probe_veth,
    "bridge": _probe_bridge,
    "dummy": _probe_dummy,
    "vxlan": _probe_vxlan,
    "vrf": _probe_vrf,
    "ipvs": _probe_ipvs,
    "nftables": _probe_nftables,
    "conntrack": _probe_conntrack,
    "ipset": _probe_ipset,
    "br_netfilter": _probe_br_netfilter,
    "netem": _probe_netem,
    "ipip": lambda: _probe_tunnel("ipip", "192.0.2.1"),
    "gre": lambda: _probe_tunnel("gre", "192.0.2.1"),
    "gretap": lambda: _probe_tunnel("gretap", "192.0.2.1"),
    "ip6tnl": lambda: _probe_tunnel("ip6tnl", "2001:db8::1"),
    "ip6gre": lambda: _probe_tunnel("ip6gre", "2001:db8::1"),
    "geneve": _probe_geneve,
    "vlan": _probe_vlan,
    "bridge_vlan": _probe_bridge_vlan,
    "rule_dscp": lambda: _rule_selector("dscp 46", "dscp", dscp=46),
    "rule_dscp_mask": lambda: _rule_selector("dscp 8/0x38", "dscp_mask", dscp=8, dscp_mask=0x38),
    "rule_flowlabel": lambda: _rule_selector("flowlabel 0x1/0xfffff", "flowlabel", family=6, flowlabel=1),
    "rule_port_mask": lambda: _rule_selector(
        "ipproto tcp sport 0x100/0xff00", "sport_mask", ipproto=6, sport=(0x100, 0x100), sport_mask=0xFF00
    ),
    "drop_reasons": _probe_drop_reasons,
}
