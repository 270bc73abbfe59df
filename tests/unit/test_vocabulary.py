"""netlab/vocabulary.py: the one spelling of host:port, protocol numbers, tables and marks."""

from __future__ import annotations

import pytest

from netlab.vocabulary import (
    BUILTIN_TABLES,
    IP_PROTOS,
    host_port,
    parse_fwmark,
    proto_name,
    table_name,
    table_number,
    table_words,
)


@pytest.mark.parametrize(
    ("address", "port", "no_port", "text"),
    [
        ("10.0.0.1", 80, "zero", "10.0.0.1:80"),
        ("2001:db8::1", 80, "zero", "[2001:db8::1]:80"),
        ("10.0.0.1", 0, "zero", "10.0.0.1:0"),
        ("2001:db8::1", None, "zero", "[2001:db8::1]:0"),
        ("10.0.0.1", None, "address", "10.0.0.1"),
        ("2001:db8::1", 0, "address", "2001:db8::1"),  # ipvsadm -t refuses [2001:db8::1] alone
        ("2001:db8::1", 443, "address", "[2001:db8::1]:443"),
        ("10.0.0.1", 0, "bracketed", "10.0.0.1"),
        ("2001:db8::1", None, "bracketed", "[2001:db8::1]"),
    ],
)
def test_host_port(address: str, port: int | None, no_port: str, text: str) -> None:
    assert host_port(address, port, no_port=no_port) == text  # type: ignore[arg-type]


def test_protocols_both_ways() -> None:
    assert all(proto_name(number) == name for name, number in IP_PROTOS.items())
    assert proto_name(47) == "47"


def test_tables() -> None:
    lab = {"vpn": 100}
    assert table_number("vpn", lab) == 100
    assert table_number("main", lab) == BUILTIN_TABLES["main"] == 254
    assert table_number(7, lab) == 7
    with pytest.raises(KeyError):
        table_number("nope", lab)
    assert [table_name(n) for n in (254, 255, 253, 0, 100, None)] == ["main", "local", "default", "unspec", "100", "?"]
    assert table_words(254) == "main (254)"
    assert table_words(100) == "100"
    assert table_words(100, lab) == "vpn (100)"
    assert table_words("vpn") == "vpn"
    assert table_words(None) == "no table"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("0x1", (1, None)),
        ("0x4000/0x4000", (0x4000, 0x4000)),
        ("0x0/0xff", (0, 0xFF)),
    ],
)
def test_parse_fwmark(text: str, parsed: tuple[int, int | None]) -> None:
    assert parse_fwmark(text) == parsed
