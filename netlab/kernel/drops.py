"""The network-policy drop records of a lab namespace: the set `dropped` of
`table inet network-policy` (netlab.expand.policy), listed with libnftables and read
as Drop values. Which rule dropped which probe is judged in netlab.probes.drops."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from netlab.kernel.nft import list_in
from netlab.lab.policy import DROPPED_SET, POLICY_TABLE
from netlab.observations import Drop


def parse_drops(node: str, rules: Mapping[int, str], document: dict[str, Any]) -> list[Drop]:
    """The recorded drops in `nft -j list set inet network-policy dropped`, named by `rules`."""
    out: list[Drop] = []
    for item in document.get("nftables", []):
        found = item.get("set")
        if not found or found.get("name") != DROPPED_SET:
            continue
        timeout = int(found.get("timeout", 0))
        for key in found.get("elem", []):
            elem = key.get("elem", key) if isinstance(key, dict) else {"val": key}
            fields = elem.get("val", {}).get("concat") if isinstance(elem.get("val"), dict) else None
            if not isinstance(fields, list) or len(fields) != 5:
                continue
            saddr, daddr, proto, dport, number = fields
            number = int(number, 0) if isinstance(number, str) else int(number)
            expires = int(elem.get("expires", timeout))
            out.append(
                Drop(
                    node,
                    rules.get(number, f"drop rule {number}"),
                    str(saddr),
                    str(daddr),
                    str(proto),
                    int(dport) if isinstance(dport, int) else None,
                    max(0, timeout - expires),
                )
            )
    return out


def read_drops(ns: str, node: str, rules: Mapping[int, str]) -> list[Drop]:
    """The recorded drops in namespace ns (node `node`, whose drop rules are `rules`);
    none when the namespace has no policy table."""
    text = list_in(ns, f"set inet {POLICY_TABLE} {DROPPED_SET}", as_json=True)
    return [] if text is None else parse_drops(node, rules, json.loads(text))
