"""How counts read in messages: "1 node", "2 nodes", never "1 nodes"."""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`n` and the noun, singular for exactly one (nouns: the plural when not noun + "s")."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
