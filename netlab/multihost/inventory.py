"""The hosts a lab runs on: an inventory in Ansible's YAML form, so users reuse theirs.

    all:
      vars: {ansible_user: root, netlab_mtu: 9000}
      hosts:
        a: {ansible_host: 10.0.0.1}
      children:
        lab:
          hosts:
            b: {ansible_host: 10.0.0.2, ansible_port: 2222}

Every host of every group is used, in the order the file first names it. A host's
variables are its groups' (`all` first, a child group over its parent, groups of one
depth in name order, as Ansible merges them) under its own. Of Ansible's, the
connection's are read (ansible_host, ansible_user, ansible_port,
ansible_ssh_private_key_file, ansible_ssh_common_args, ansible_ssh_extra_args); any
other is left alone, since inventories carry many. netlab's own are `netlab_*`, and a
misspelt one is an error:

    netlab_address      the address the other hosts reach this one at (the tunnels'
                        underlay); default ansible_host, resolved if it is a name
    netlab_mtu          the MTU of the path between the hosts (default 1500)
    netlab_tunnel_port  the UDP port of the cross-host VXLAN tunnels (default 4792;
                        one value for all hosts)
    netlab_command      how to run netlab on the host (default `netlab`)

Problems are reported as a lab's are: file:line, the key path, what would be right.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shlex
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from netlab.errors import LabError, Problem, UsageError
from netlab.lab.bounds import TooBig, read_bounded
from netlab.lab.source import Path, Source, parse_yaml

HOSTS_ENV = "NETLAB_HOSTS"
DEFAULT_TUNNEL_PORT = 4792  # neither IANA's VXLAN port (4789) nor flannel's (8472): never a lab's own
DEFAULT_MTU = 1500
MAX_INVENTORY_BYTES = 1 << 20
GROUP_KEYS = ("hosts", "vars", "children")
NETLAB_VARS = ("netlab_address", "netlab_mtu", "netlab_tunnel_port", "netlab_command")
_RANGE = re.compile(r"\[[^]]*:[^]]*\]")  # Ansible's host ranges, web[01:20]


@dataclass(frozen=True)
class Host:
    """One machine: how ssh reaches it, and where the tunnels meet it."""

    name: str  # the inventory's name for it (what `host:` in a lab names)
    ssh_host: str  # ansible_host, else the name
    tunnel_address: str  # netlab_address, else ansible_host's address
    user: str | None = None
    port: int | None = None
    key_file: str | None = None
    ssh_args: tuple[str, ...] = ()  # ansible_ssh_common_args + ansible_ssh_extra_args
    mtu: int = DEFAULT_MTU
    netlab: str = "netlab"


@dataclass(frozen=True)
class Inventory:
    file: str
    hosts: tuple[Host, ...]
    tunnel_port: int = DEFAULT_TUNNEL_PORT

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)


def hosts_file(option: str | None) -> str | None:
    """--hosts FILE, else $NETLAB_HOSTS, else None (the lab runs on this machine)."""
    return option or os.environ.get(HOSTS_ENV) or None


def load_inventory(path: str) -> Inventory:
    """Read and check an inventory file; LabError (exit 2) lists every problem."""
    try:
        text = read_bounded(path, MAX_INVENTORY_BYTES, "an inventory").decode()
    except FileNotFoundError:
        raise UsageError(f"--hosts {path}: no such inventory file") from None
    except TooBig as e:
        raise LabError([Problem(path, 0, "", f"the inventory {e}")], "the inventory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--hosts {path}: cannot read the inventory: {getattr(e, 'strerror', None) or e}") from None
    data, source, problems = parse_yaml(text, path)
    if problems:
        raise LabError(problems, "the inventory")
    reader = _Reader(source)
    inventory = reader.read(data)
    if reader.problems:
        raise LabError(reader.problems, "the inventory")
    assert inventory is not None
    return inventory


@dataclass
class _Group:
    path: Path
    depth: int
    vars: dict[str, tuple[Any, Path]] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)


@dataclass
class _Reader:
    source: Source
    problems: list[Problem] = field(default_factory=list)

    def complain(self, path: Path, message: str) -> None:
        self.problems.append(self.source.problem(path, message))

    def read(self, data: Any) -> Inventory | None:
        if not isinstance(data, dict) or not data:
            self.complain(
                (),
                "an inventory is Ansible's YAML form, a mapping of groups: "
                "all: {hosts: {NAME: {ansible_host: ADDRESS}}}",
            )
            return None
        groups: dict[str, _Group] = {}
        host_vars: dict[str, dict[str, tuple[Any, Path]]] = {}
        for name, body in data.items():
            self._group(name, body, (name,), 0, groups, host_vars)
        if not host_vars and not self.problems:
            self.complain((), "the inventory names no hosts (a group's `hosts:` lists them)")
        hosts = [self._host(name, self._merged(name, groups, own)) for name, own in host_vars.items()]
        return Inventory(self.source.file, tuple(h for h in hosts if h), self._tunnel_port(groups, host_vars))

    def _group(
        self,
        name: str,
        body: Any,
        path: Path,
        depth: int,
        groups: dict[str, _Group],
        host_vars: dict[str, dict[str, tuple[Any, Path]]],
    ) -> None:
        group = groups.setdefault(name, _Group(path, depth))
        group.depth = max(group.depth, depth)
        if body is None:
            return
        if not isinstance(body, dict):
            self.complain(path, "a group is a mapping with `hosts:`, `vars:` and `children:` (each optional)")
            return
        for key in body:
            if key not in GROUP_KEYS:
                self.complain((*path, key), f"a group has {', '.join(GROUP_KEYS)}{_did_you_mean(key, GROUP_KEYS)}")
        group.vars.update(self._vars(body.get("vars"), (*path, "vars")))
        for host, own in self._mapping(body.get("hosts"), (*path, "hosts"), "hosts: {NAME: {ansible_host: …}}"):
            if _RANGE.search(host):
                self.complain((*path, "hosts", host), "host ranges (web[01:03]) are not supported; list each host")
                continue
            host_vars.setdefault(host, {}).update(self._vars(own, (*path, "hosts", host)))
            group.hosts.append(host)
        for child, child_body in self._mapping(body.get("children"), (*path, "children"), "children: {GROUP: …}"):
            self._group(child, child_body, (*path, "children", child), depth + 1, groups, host_vars)
            group.hosts += [h for h in groups[child].hosts if h not in group.hosts]

    def _mapping(self, value: Any, path: Path, form: str) -> Iterator[tuple[str, Any]]:
        if value is None:
            return
        if not isinstance(value, dict):
            self.complain(path, f"expected a mapping ({form})")
            return
        yield from value.items()

    def _vars(self, value: Any, path: Path) -> dict[str, tuple[Any, Path]]:
        out = {}
        for key, v in self._mapping(value, path, "NAME: VALUE"):
            if key.startswith("netlab_") and key not in NETLAB_VARS:
                self.complain((*path, key), f"netlab's variables are {', '.join(NETLAB_VARS)}{_did_you_mean(key)}")
                continue
            out[key] = (v, (*path, key))
        return out

    def _merged(
        self, host: str, groups: dict[str, _Group], own: dict[str, tuple[Any, Path]]
    ) -> dict[str, tuple[Any, Path]]:
        """Ansible's order: `all`, then the host's groups by depth and name, then the host's own."""
        mine = sorted((g.depth, name) for name, g in groups.items() if host in g.hosts and name != "all")
        merged = dict(groups["all"].vars) if "all" in groups else {}
        for _, name in mine:
            merged.update(groups[name].vars)
        return merged | own

    def _host(self, name: str, v: dict[str, tuple[Any, Path]]) -> Host | None:
        before = len(self.problems)
        connection = v.get("ansible_connection")
        if connection is not None and connection[0] != "ssh":
            self.complain(connection[1], "netlab reaches hosts with ssh only (ansible_connection: ssh)")
        ssh_host = self._text(v, "ansible_host") or name
        address = self._text(v, "netlab_address") or ssh_host
        tunnel = self._address(address, v.get("netlab_address") or v.get("ansible_host"), name)
        args = [
            *self._words(v, "ansible_ssh_common_args"),
            *self._words(v, "ansible_ssh_extra_args"),
        ]
        host = Host(
            name=name,
            ssh_host=ssh_host,
            tunnel_address=tunnel or "",
            user=self._text(v, "ansible_user"),
            port=self._number(v, "ansible_port", 1, 65535),
            key_file=self._text(v, "ansible_ssh_private_key_file"),
            ssh_args=tuple(args),
            mtu=self._number(v, "netlab_mtu", 576, 65535) or DEFAULT_MTU,
            netlab=self._text(v, "netlab_command") or "netlab",
        )
        return host if len(self.problems) == before else None

    def _text(self, v: dict[str, tuple[Any, Path]], key: str) -> str | None:
        if key not in v or v[key][0] is None:
            return None
        value, path = v[key]
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            self.complain(path, "expected a non-empty string")
            return None
        return os.path.expanduser(str(value)) if key.endswith("_file") else str(value)

    def _words(self, v: dict[str, tuple[Any, Path]], key: str) -> list[str]:
        text = self._text(v, key)
        try:
            return shlex.split(text) if text else []
        except ValueError as e:
            self.complain(v[key][1], f"cannot split into ssh arguments: {e}")
            return []

    def _number(self, v: dict[str, tuple[Any, Path]], key: str, low: int, high: int) -> int | None:
        if key not in v:
            return None
        value, path = v[key]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.complain(path, f"expected a number from {low} to {high}, got {value!r}")
            return None
        return value

    def _address(self, text: str, given: tuple[Any, Path] | None, host: str) -> str | None:
        """The tunnels' underlay address: an IP address as given, or the name resolved."""
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        try:
            found = socket.getaddrinfo(text, None, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            found = []
        if not found:
            self.complain(
                given[1] if given else (),
                f"host {host}: {text!r} is not an address and does not resolve; give netlab_address: the "
                "address the other hosts reach it at (the tunnels' underlay)",
            )
            return None
        return str(sorted(found, key=lambda a: a[0] != socket.AF_INET)[0][4][0])

    def _tunnel_port(self, groups: dict[str, _Group], host_vars: Mapping[str, dict[str, tuple[Any, Path]]]) -> int:
        ports: dict[int, Path] = {}
        for host in host_vars:
            v = self._merged(host, groups, host_vars[host])
            port = self._number(v, "netlab_tunnel_port", 1, 65535)
            if port is not None:
                ports.setdefault(port, v["netlab_tunnel_port"][1])
        if len(ports) > 1:
            where = sorted(ports.values())[1]
            self.complain(where, f"every host takes the same netlab_tunnel_port; this inventory has {sorted(ports)}")
        return next(iter(ports), DEFAULT_TUNNEL_PORT)


def _did_you_mean(word: str, options: tuple[str, ...] = NETLAB_VARS) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
