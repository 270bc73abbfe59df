"""nftables rulesets and iptables dumps, inside a lab's namespaces.

libnftables (Debian's python3-nftables) runs in-process, always in a thread that has
entered a lab namespace (or a throwaway one of its own) first: the context and its netlink
socket are made there, so they only ever see that namespace. iptables dumps go to
`iptables-nft-restore` (`ip6tables-nft-restore`) with the text on stdin: `ip netns exec`
for a lab namespace; for a throwaway one, a child of the thread that made it (a process
forked by a thread starts in that thread's network namespace).

A node's ipsets go first (netlab.kernel.ipset, netlink from the same thread): a dump may
match a set, which must exist when its rule goes in.

`trial` is the preflight of `netlab up`: each node's ipsets, rulesets and dumps, in order, in a
network namespace of their own that vanishes afterwards (unshared by a thread, never
bind-mounted): every ruleset is first dry-run (`nft -c`), which sends it to the kernel to
validate without committing, then applied (but for the node's last), so a later ruleset
that refers to an earlier one's tables is checked against them. Errors come back with their line in the text.
The namespace first holds a stand-in for each interface the node declares (a veth end of
that name, down): `meta oif veth0` resolves the name to an ifindex when the ruleset loads,
so it loads exactly when it would on the node, whose links exist before its firewall.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from netlab.kernel import netns as nsops
from netlab.kernel.nlsock import NetlinkSocket

if TYPE_CHECKING:
    from netlab.plan.ops import CreateIpset, LoadNftables, Op, RestoreIptables

# The plan's ops (and their encoder) are imported by the functions that apply them: the
# readers (`netlab trace` lists and adds tables) start without them (~17 ms).

# libnftables keeps some state per process (its caches, the symbol tables it reads):
# one context at a time.
_LOCK = threading.Lock()
TIMEOUT = 120  # seconds for one iptables-nft-restore


@dataclass(frozen=True)
class Message:
    """One error libnftables or iptables-nft-restore gave, where it could say where."""

    text: str  # e.g. "Error: syntax error, unexpected newline"
    line: int | None = None  # the line within the ruleset or dump, from 1
    columns: str | None = None  # nft's "20-25"
    context: tuple[str, ...] = ()  # the offending line (and nft's caret line under it)
    command: int | None = None  # JSON: the index in "nftables": [...] of the failing command

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else f"command {self.command}: " if self.command is not None else ""
        return where + self.text


class FirewallError(Exception):
    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages or [Message("failed, without a message")]
        super().__init__("; ".join(str(m) for m in self.messages))


# ---------------------------------------------------------------- the namespace guard


def _host_netns() -> int:
    """The inode of the main thread's network namespace: the machine's (netlab never moves it)."""
    pid = os.getpid()
    return os.stat(f"/proc/{pid}/task/{pid}/ns/net").st_ino


def _require_lab_netns() -> None:
    """Refuse to touch netfilter from a thread that is still in the machine's namespace."""
    if os.stat("/proc/thread-self/ns/net").st_ino == _host_netns():
        raise RuntimeError("refusing to change nftables or iptables outside a lab namespace")


@contextlib.contextmanager
def _nft() -> Iterator[Any]:
    """A fresh libnftables context in the calling thread's (lab) namespace."""
    _require_lab_netns()
    try:
        import nftables
    except ImportError as err:
        raise FirewallError(
            [
                Message(
                    f"cannot load libnftables ({err}): apt-get install python3-nftables, and make the venv "
                    "with --system-site-packages (scripts/setup does both)"
                )
            ]
        ) from None
    with _LOCK:
        yield nftables.Nftables()


# ---------------------------------------------------------------- in the current thread's namespace


_RECORD = re.compile(r"^(?P<src>\S+?):(?P<line>\d+):(?P<cols>\d+-\d+): (?P<text>.*)$")
_INCLUDED = re.compile(r"^In file included from (?P<src>\S+?):(?P<line>\d+):(?P<cols>\d+-\d+):?\s*$")
_INTERNAL = re.compile(r"^internal:0:0-0: ")
_INDEX = re.compile(r"Parsing command array at index (\d+) failed")


def parse_nft_errors(error: str, source: str) -> list[Message]:
    """libnftables' error text → messages: `SOURCE:LINE:COLS: Error: …` records, each
    followed by the offending line and a caret line (for a ruleset read from `source`);
    JSON errors carry no line ("internal:0:0-0: …") but may name the command's index."""
    messages: list[Message] = []
    current: dict[str, Any] | None = None
    index: int | None = None
    include_at: dict[str, Any] = {}
    for raw in error.splitlines():
        included = _INCLUDED.match(raw)
        if included:  # the next error is in a file the ruleset includes, from this line of it
            if included["src"] == source:
                include_at = {"line": int(included["line"]), "columns": included["cols"]}
            continue
        m = _RECORD.match(raw)
        if m and not m["src"].startswith("internal"):
            if current:
                messages.append(_message(current))
            if m["src"] == source:
                current = {"text": m["text"], "line": int(m["line"]), "columns": m["cols"], "context": []}
            else:  # in an included file: its own name and line, at the ruleset's `include`
                current = {"text": f"{m['src']}:{m['line']}: {m['text']}", "context": [], "located": True, **include_at}
            include_at = {}
        elif raw.startswith(("Error:", "Warning:", "internal:")) or current is None:
            if not raw.strip():
                continue
            if current:
                messages.append(_message(current))
            text = _INTERNAL.sub("", raw)
            found = _INDEX.search(text)
            if found:
                index = int(found[1])
                current = None
                continue
            current = {"text": text, "context": []}
        else:
            current["context"].append(raw)
    if current:
        messages.append(_message(current))
    if index is not None:
        messages = [replace(m, command=index) for m in messages] or [Message(f"command {index} failed")]
    return messages


def _message(fields: dict[str, Any]) -> Message:
    context = list(fields.pop("context"))
    while context and not context[-1].strip():
        context.pop()
    located = fields.pop("located", False) or "line" in fields
    if not located:
        context = []  # without a location nft echoes the first line of its input: no help
    return Message(**fields, context=tuple(context))


def nft_text(nft: Any, text: str, *, dry_run: bool = False) -> None:
    """Run a ruleset in nft's syntax as `nft [-c] -f FILE` does: one transaction. It is
    handed over as a file (a memfd) so that errors carry their line and column."""
    fd = os.memfd_create("netlab-ruleset", os.MFD_CLOEXEC)
    try:
        os.write(fd, text.encode())
        source = f"/proc/self/fd/{fd}"
        nft.set_dry_run(dry_run)
        rc, _out, err = nft.cmd_from_file(source)
    finally:
        os.close(fd)
    if rc != 0:
        raise FirewallError(parse_nft_errors(err, source))


def nft_json(nft: Any, document: dict[str, Any], *, dry_run: bool = False) -> None:
    nft.set_dry_run(dry_run)
    rc, _out, err = nft.json_cmd(document)
    if rc != 0:
        raise FirewallError(parse_nft_errors(err, ""))


def load_nftables(op: LoadNftables, *, dry_run: bool = False) -> None:
    """Apply (or with dry_run, only validate) the op's ruleset in the calling thread's namespace."""
    with _nft() as nft:
        if op.json:
            _json_with_index(nft, json.loads(op.text), dry_run=dry_run)
        else:
            nft_text(nft, op.text, dry_run=dry_run)


def _json_with_index(nft: Any, document: dict[str, Any], *, dry_run: bool) -> None:
    """A JSON ruleset; when the kernel refuses it, libnftables does not say which command
    it was: find the first failing one by dry-running ever longer prefixes (bisecting)."""
    try:
        nft_json(nft, document, dry_run=dry_run)
    except FirewallError as err:
        commands = document["nftables"]
        if any(m.command is not None for m in err.messages) or len(commands) < 2:
            raise
        low, high = 1, len(commands)  # the shortest failing prefix is in [low, high]
        while low < high:
            mid = (low + high) // 2
            try:
                nft_json(nft, {"nftables": commands[:mid]}, dry_run=True)
                low = mid + 1
            except FirewallError:
                high = mid
        raise FirewallError([replace(m, command=low - 1) for m in err.messages]) from None


_IPT_NOISE = re.compile(r"^(Try `|Error occurred at line: )")
_IPT_PREFIX = re.compile(r"^(ip6?tables(-nft)?-restore( v[\d.]+ \(nf_tables\))?: ?)+")
_IPT_LINE = re.compile(r"\bline:? (\d+)")


def parse_iptables_errors(stderr: str, text: str) -> list[Message]:
    """iptables-nft-restore's complaint → one message with the dump's line, when it says."""
    found = _IPT_LINE.search(stderr)
    line = int(found[1]) if found else None
    words = [_IPT_PREFIX.sub("", raw).strip() for raw in stderr.splitlines() if not _IPT_NOISE.match(raw)]
    message = " ".join(w for w in words if w)
    message = re.sub(r"^line \d+(?: failed)?: ", "", message) or "failed, without a message"
    lines = text.splitlines()
    context = (lines[line - 1],) if line and 0 < line <= len(lines) else ()
    return [Message(message, line=line, context=context)]


def restore_iptables(op: RestoreIptables, *, test: bool = False, netns: str | None = None) -> None:
    """Load the op's dump: in the named namespace (`ip netns exec`), or with netns None in
    the calling thread's (which must be a lab's or a throwaway one)."""
    tool = "ip6tables-nft-restore" if op.family == 6 else "iptables-nft-restore"
    argv = [tool, *(["--noflush"] if op.noflush else []), *(["--test"] if test else [])]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    else:
        _require_lab_netns()
    try:
        proc = subprocess.run(argv, input=op.text, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FirewallError([Message(f"{tool}: {err}")]) from None
    if proc.returncode != 0:
        raise FirewallError(parse_iptables_errors(proc.stderr or proc.stdout, op.text))


def save_iptables(netns: str, family: int) -> str:
    """`iptables-nft-save -c` (ip6tables for family 6) of a lab namespace: its iptables-nft
    tables with each rule's counts, or "" when it has none."""
    tool = "ip6tables-nft-save" if family == 6 else "iptables-nft-save"
    argv = ["ip", "netns", "exec", netns, tool, "-c"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FirewallError([Message(f"{tool}: {err}")]) from None
    if proc.returncode != 0:
        raise FirewallError([Message(f"{tool}: {proc.stderr.strip() or 'failed, without a message'}")])
    return proc.stdout


def create_ipset(op: CreateIpset) -> None:
    """Make the op's set and its members in the calling thread's namespace (netlab.kernel.ipset)."""
    from netlab.kernel.ipset import apply_here  # pyroute2's ipset messages: for a lab with sets

    _require_lab_netns()
    for _op, why in apply_here([op]):
        raise FirewallError([Message(why)])


# ---------------------------------------------------------------- a lab namespace (the driver)


def apply_in(fd: int, ns: str, ops: Sequence[Op]) -> list[tuple[Op, str]]:
    """Apply one namespace's firewall ops in order (fd: the open namespace); stop at the first
    that fails (the later ones may build on it). Returns (op, reason) for it and for those
    not tried."""

    from netlab.plan.ops import CreateIpset, LoadNftables, RestoreIptables
    from netlab.plan.removal import Remove

    def run() -> list[tuple[Op, str]]:
        nsops.enter_here(fd)
        for i, op in enumerate(ops):
            try:
                if isinstance(op, Remove) and isinstance(op.op, CreateIpset):
                    from netlab.kernel.ipset import destroy_here

                    why = destroy_here(op.op.name)
                    if why:
                        raise FirewallError([Message(why)])
                elif isinstance(op, CreateIpset):
                    create_ipset(op)
                elif isinstance(op, LoadNftables):
                    load_nftables(op)
                elif isinstance(op, RestoreIptables):
                    restore_iptables(op, netns=ns)
                else:
                    raise TypeError(f"unexpected {type(op).__name__} among firewall ops")
            except FirewallError as err:
                return [
                    (op, reason(err.messages)),
                    *[(later, f"not tried: {op.what or 'an earlier ruleset'} failed") for later in ops[i + 1 :]],
                ]
        return []

    return nsops.in_thread(run)


def reason(messages: Sequence[Message]) -> str:
    """Messages as one line for an OpFailed reason."""
    return "; ".join(str(m) + (f" ({m.context[0].strip()})" if m.context else "") for m in messages)


def list_ruleset(ns: str) -> str:
    """`nft list ruleset` of a lab namespace, as evidence (iptables-nft's tables included)."""

    def run() -> str:
        fd = nsops.open_netns(ns)
        try:
            nsops.enter_here(fd)
        finally:
            os.close(fd)
        with _nft() as nft:
            nft.set_dry_run(False)
            rc, out, err = nft.cmd("list ruleset")
        if rc != 0:
            raise FirewallError(parse_nft_errors(err, ""))
        return str(out)

    return nsops.in_thread(run)


def list_in(ns: str, what: str, *, as_json: bool = False) -> str | None:
    """`nft [-j] list WHAT` (e.g. "map inet network-policy dropped") in a lab namespace;
    None when it does not exist there. (JSON cannot print every statement — a map update
    makes libnftables warn on stderr — so list rules as text.)"""
    rc, out, err = command_in(ns, f"list {what}", as_json=as_json)
    if rc != 0:
        if "No such file or directory" in err:
            return None
        raise FirewallError(parse_nft_errors(err, ""))
    return out


# ---------------------------------------------------------------- the preflight


@dataclass(frozen=True)
class TrialFailure:
    index: int  # which of the ops failed
    messages: list[Message]


def trial(ops: Sequence[Op], interfaces: Sequence[str] = ()) -> TrialFailure | None:
    """Try one node's firewall ops, in order, in a throwaway network namespace that holds
    a stand-in for each of `interfaces` (the node's): each op is dry-run first (nft's `-c`,
    iptables-nft-restore's `--test`: errors in the text), then applied there (the kernel's
    own refusals, and what later ones build on). The namespace is gone when this returns.
    None if every op went in.

    A node's last ruleset is only dry-run: nft's check mode sends the whole transaction to
    the kernel, which processes it (a missing chain, a device it lacks) and validates it
    before aborting, so applying it as well refuses nothing more, and nothing comes after
    it that needs its tables. (A 4740-line policy table: 0.1 s of CPU per load, 3 nodes.)"""

    from netlab.plan.ops import CreateIpset, LoadNftables, RestoreIptables

    def run() -> TrialFailure | None:
        nsops.unshare_here()
        _add_standins(interfaces)
        for i, op in enumerate(ops):
            try:
                if isinstance(op, CreateIpset):  # first: the dumps after it may match the set
                    create_ipset(op)
                elif isinstance(op, LoadNftables):
                    load_nftables(op, dry_run=True)
                    if i < len(ops) - 1:  # only what comes after it needs it applied
                        load_nftables(op)
                elif isinstance(op, RestoreIptables):
                    restore_iptables(op, test=True)
                    restore_iptables(op)
                else:
                    raise TypeError(f"unexpected {type(op).__name__} among firewall ops")
            except FirewallError as err:
                return TrialFailure(i, err.messages)
        return None

    return nsops.in_thread(run)


def _add_standins(names: Sequence[str]) -> None:
    """In the calling thread's (throwaway) namespace: a veth end named after each of
    `names`, its peer under a name none of them has. A veth, whatever the declared kind:
    the kernel lacks some kinds (dummy, vrf) and a ruleset only needs the name to have an
    ifindex (`oif`), or nothing at all (`oifname`)."""
    from netlab.kernel.encode import request
    from netlab.plan.ops import CreateLink, VethType

    names = [n for n in dict.fromkeys(names) if n != "lo"]
    if not names:
        return
    taken = set(names)
    peers = (p for p in (f"nlstandin{i}" for i in range(len(names) + len(taken))) if p not in taken)
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    sock = NetlinkSocket()
    try:
        msgs = [
            request(CreateLink("", name=name, type=VethType("", next(peers)), up=False), lambda _: 0, lambda _: fd)
            for name in names
        ]
        failures = sock.request(msgs)
    finally:
        sock.close()
        os.close(fd)
    if failures:
        raise OSError(failures[0].errno, f"a stand-in for {names[failures[0].index]}: {failures[0].message}")


def command_in(ns: str, command: str, *, handles: bool = False, as_json: bool = False) -> tuple[int, str, str]:
    """One nft command (`add table …`, `delete table …`, `list table …`) in a lab namespace
    through libnftables: (rc, stdout, stderr), never raising for nft's own refusal;
    handles: listings carry each rule's `# handle N`; as_json: nft -j."""

    def run() -> tuple[int, str, str]:
        fd = nsops.open_netns(ns)
        try:
            nsops.enter_here(fd)
        finally:
            os.close(fd)
        with _nft() as nft:
            nft.set_dry_run(False)
            nft.set_handle_output(handles)
            nft.set_json_output(as_json)
            try:
                rc, out, err = nft.cmd(command)
            finally:
                nft.set_handle_output(False)
                nft.set_json_output(False)
        return int(rc), str(out), str(err)

    return nsops.in_thread(run)
