"""A probe check's probes added up (loss, rtt min/avg/max) and judged against `rtt_ms:`
and `loss:`, without a kernel: each failing case asserts the reason a user reads."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from netlab.lab.checks import ProbeExpect
from netlab.probes.flow import ProbeResult
from netlab.probes.judge import RoundTrips, judge_probe, judge_round_trips, round_trips


def probe(rtt: float | None = None, outcome: str = "ok") -> ProbeResult:
    return ProbeResult(
        outcome,  # type: ignore[arg-type]
        "icmp",
        "10.0.0.1",
        7,
        "10.0.0.2",
        None,
        None,
        None,
        None,
        None,
        f"{outcome} detail",
        rtt,
    )


def expect(**kw: Any) -> ProbeExpect:
    return ProbeExpect.model_validate(kw)


# 8 answered (40..48 ms), 2 lost
RESULTS = [probe(40.0 + i) for i in range(0, 9) if i != 4] + [probe(outcome="timeout")] * 2


def test_round_trips_add_up_like_ping() -> None:
    rt = round_trips(RESULTS)
    assert rt == RoundTrips(sent=10, lost=2, rtt_min=40.0, rtt_avg=44.0, rtt_max=48.0)
    assert rt.loss == 20.0
    assert rt.words() == "rtt min/avg/max 40/44/48 ms, loss 20% (2 of 10)"
    assert rt.to_json() == {"sent": 10, "lost": 2, "loss": 20.0, "rtt_ms": {"min": 40.0, "avg": 44.0, "max": 48.0}}


def test_an_icmp_error_or_a_refusal_is_an_answer_not_a_loss() -> None:
    rt = round_trips([probe(outcome="unreachable"), probe(outcome="refused"), probe(1.0)])
    assert (rt.lost, rt.loss, rt.rtt_min, rt.rtt_max) == (0, 0.0, 1.0, 1.0)
    none = round_trips([probe(outcome="timeout")])
    assert none.to_json() == {"sent": 1, "lost": 1, "loss": 100.0, "rtt_ms": None}
    assert none.words() == "no round trip, loss 100% (1 of 1)"


@pytest.mark.parametrize(
    ("rtt_ms", "reason"),
    [
        ({"min": 45}, "expected round trips of at least 45 ms, the fastest took 40 ms (rtt min/avg/max 40/44/48 ms)"),
        ({"max": 47}, "expected round trips of at most 47 ms, the slowest took 48 ms (rtt min/avg/max 40/44/48 ms)"),
        (
            {"min": 41, "max": 50},
            "expected round trips of 41..50 ms, the fastest took 40 ms (rtt min/avg/max 40/44/48 ms)",
        ),
    ],
)
def test_rtt_bounds_the_fastest_and_the_slowest(rtt_ms: dict[str, float], reason: str) -> None:
    rt = round_trips(RESULTS)
    assert judge_round_trips(expect(rtt_ms=rtt_ms, loss={"max": 50}), rt).reasons == [reason]
    assert judge_round_trips(expect(rtt_ms={"min": 40, "max": 48}), rt).passed


@pytest.mark.parametrize(
    ("rtt_ms", "reason"),
    [
        ({"avg": {"max": 43}}, "expected round trips of a mean of at most 43 ms, the mean was 44 ms"),
        ({"avg": {"min": 45, "max": 50}}, "expected round trips of a mean of 45..50 ms, the mean was 44 ms"),
        (
            {"max": 48, "avg": {"max": 40}},
            "expected round trips of at most 48 ms and a mean of at most 40 ms, the mean was 44 ms",
        ),
    ],
)
def test_avg_bounds_the_mean_round_trip(rtt_ms: dict[str, Any], reason: str) -> None:
    """One slow probe among fast ones (a loaded or emulated machine) breaks `max:`, not `avg:`."""
    rt = round_trips(RESULTS)
    assert judge_round_trips(expect(rtt_ms=rtt_ms), rt).reasons == [f"{reason} (rtt min/avg/max 40/44/48 ms)"]
    assert judge_round_trips(expect(rtt_ms={"avg": {"min": 44, "max": 44}}), rt).passed
    jitter = round_trips([probe(3.0)] * 9 + [probe(41.0)])  # CI's VM: one same-node ping took 41 ms
    assert not judge_round_trips(expect(rtt_ms={"max": 35}), jitter).passed
    assert judge_round_trips(expect(rtt_ms={"avg": {"max": 20}}), jitter).passed


def test_no_answer_leaves_no_round_trip_to_judge() -> None:
    j = judge_round_trips(expect(rtt_ms={"max": 100}), round_trips([probe(outcome="timeout")] * 3))
    assert j.reasons == ["expected round trips of at most 100 ms, but no probe succeeded (3 of 3 got no answer)"]


@pytest.mark.parametrize(
    ("loss", "reason"),
    [
        ({"max": 10}, "expected a loss of at most 10%, saw 20% (2 of 10 probes got no answer)"),
        ({"min": "25%"}, "expected a loss of at least 25%, saw 20% (2 of 10 probes got no answer)"),
        ({"min": 0, "max": 0}, "expected a loss of 0..0%, saw 20% (2 of 10 probes got no answer)"),
    ],
)
def test_loss_is_the_share_without_an_answer(loss: dict[str, Any], reason: str) -> None:
    assert judge_round_trips(expect(loss=loss), round_trips(RESULTS)).reasons == [reason]
    assert judge_round_trips(expect(loss={"min": 20, "max": 20}), round_trips(RESULTS)).passed


def test_with_loss_a_lost_probe_is_not_a_wrong_result() -> None:
    """`result: ok` holds for the probes that got an answer; those that got none are the loss's."""
    assert not judge_probe(expect(), RESULTS, lambda n: set(n), lambda a: None).passed
    assert judge_probe(expect(loss={"max": 30}), RESULTS, lambda n: set(n), lambda a: None).passed
    refused = [*RESULTS, dataclasses.replace(RESULTS[0], outcome="refused")]
    reasons = judge_probe(expect(loss={"max": 30}), refused, lambda n: set(n), lambda a: None).reasons
    assert reasons and reasons[0].startswith("expected ok, saw refused in 1 of 11 probes")


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"rtt_ms": {}}, "give `min:`, `max:`, `avg:` or some of them"),
        ({"rtt_ms": {"avg": {}}}, "give `min:`, `max:` or both"),
        ({"rtt_ms": {"avg": {"min": 30, "max": 20}}}, "min 30 is more than max 20"),
        ({"loss": {"min": 50, "max": 10}}, "min 50 is more than max 10"),
        ({"loss": {"max": "150%"}}, "less than or equal to 100"),
        ({"rtt_ms": {"min": -1}}, "greater than or equal to 0"),
    ],
)
def test_bad_ranges_are_refused(given: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        expect(**given)
