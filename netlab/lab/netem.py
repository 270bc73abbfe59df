"""`netem:` on a link end: the impairments the kernel's netem qdisc applies to what the
interface sends (delay with jitter, loss, duplication, corruption, reordering, a rate).

Values are written as `tc qdisc … netem` takes them — `100ms`, `5%`, `10mbit` — and kept
in that normal form (so `netlab render` writes them back as written); the plan reads
the numbers out of them with the functions below. What tc itself refuses (jitter without
a delay, reordering without one, a correlation without jitter) is refused here, with the
key it is on.
"""

import re
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from netlab.lab.values import Base
from netlab.vocabulary import format_duration

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*$")
_DURATION_US = {"us": 1, "ms": 1000, "s": 1_000_000}
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps)\s*$", re.IGNORECASE)
_RATE_FACTOR = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
MAX_DELAY_US = 60_000_000  # a minute: anything longer is a typo, and tc's 32-bit ticks end at 274 s
MAX_RATE_BYTES = 2**32 - 1  # the rate field of tc_netem_rate (bytes per second)

DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")


def _duration(value: Any) -> Any:
    """'100ms', '1.5s', '250us' → its normal form ('100ms'); a bare number has no unit."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return value  # the type refuses it
    if not isinstance(value, str):
        raise ValueError(f"a duration needs its unit: {value}ms (or us, s)")
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration like 100ms, 1.5s or 250us")
    us = duration_us(f"{m.group(1)}{m.group(2)}")
    if us > MAX_DELAY_US:
        raise ValueError(f"{value!r} is longer than a minute; netem delays go up to 60s")
    return format_duration(us)


def _percent(value: Any) -> Any:
    """'5%', '0.1%' or a number of percent → '5%'."""
    if isinstance(value, bool):
        return value
    m = _PERCENT_RE.match(str(value)) if isinstance(value, (str, int, float)) else None
    if not m:
        raise ValueError(f"{value!r} is not a percentage like 5% or 0.1%")
    pct = float(m.group(1))
    if pct > 100:
        raise ValueError(f"{value!r} is more than 100%")
    return f"{pct:g}%"


def _rate(value: Any) -> Any:
    """'10mbit', '1gbit', '500kbit', '2mbps' (bytes) → its normal form."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return value
    m = _RATE_RE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a rate like 10mbit, 500kbit or 1gbit (bps: bytes per second)")
    text = f"{m.group(1)}{m.group(2).lower()}{m.group(3).lower()}"
    if rate_bytes(text) < 1:
        raise ValueError(f"{value!r} is less than a byte per second")
    if rate_bytes(text) > MAX_RATE_BYTES:
        raise ValueError(f"{value!r} is more than netem's 34gbit")
    return text


Duration = Annotated[str, BeforeValidator(_duration)]
Percent = Annotated[str, BeforeValidator(_percent)]
Rate = Annotated[str, BeforeValidator(_rate)]


class Netem(Base):
    """What the interface's root qdisc does to each packet it sends (`tc qdisc replace dev
    IF root netem …`). Only egress: to impair both directions, give both ends."""

    delay: Duration | None = None
    jitter: Duration | None = None  # the delay varies by up to this much either way
    correlation: Percent | None = None  # of each delay with the previous one
    distribution: Literal["uniform", "normal", "pareto", "paretonormal"] | None = None  # of the jitter
    loss: Percent | None = None
    duplicate: Percent | None = None
    corrupt: Percent | None = None  # a random bit flipped
    reorder: Percent | None = None  # sent at once, ahead of the delayed ones
    rate: Rate | None = None
    limit: Annotated[int, Field(ge=1, lt=2**32)] | None = None  # packets queued at most (netem's 1000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = [k for k, v in self.model_dump().items() if v is not None]
        if not given:
            raise ValueError(
                "impairs nothing: give at least one of delay, loss, duplicate, corrupt, reorder, rate, "
                "limit (to remove it, leave `netem:` out)"
            )
        needs = (
            ("jitter", "delay", "jitter varies the delay"),
            ("correlation", "jitter", "correlation relates one delay's jitter to the next"),
            ("distribution", "jitter", "distribution shapes the jitter"),
            ("reorder", "delay", "reordered packets are those sent without the delay"),
        )
        for key, needed, why in needs:
            if getattr(self, key) is not None and getattr(self, needed) is None:
                raise ValueError(f"`{key}:` needs `{needed}:` ({why})")
        return self


# ---------------------------------------------------------------- the numbers in the normal forms


def duration_us(text: str) -> int:
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return round(float(m.group(1)) * _DURATION_US[m.group(2)])


def percent(text: str | None) -> float:
    return float(text.rstrip("%")) if text else 0.0


def rate_bytes(text: str) -> int:
    """Bytes per second ('10mbit' → 1250000)."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"not a rate: {text!r}")
    amount = float(m.group(1)) * _RATE_FACTOR[m.group(2).lower()]
    return round(amount / 8 if m.group(3).lower() == "bit" else amount)
