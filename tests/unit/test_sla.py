"""Delivery service levels: percentiles, rates, the window and breach changes."""

from __future__ import annotations

from nurture.agents.sla import Objectives, SlaTracker

T = 1_800_000_000_000
OBJECTIVES = Objectives(sent_p95_seconds=60, delivered_p95_seconds=120, bounce_rate=0.1, failure_rate=0.1,
                        window_seconds=3600, min_outcomes=10)


def _tracker(sent_latencies_s, statuses=()):
    tracker = SlaTracker(OBJECTIVES)
    for index, latency in enumerate(sent_latencies_s):
        tracker.observe("email", "sent", T + index, int(latency * 1000), f"s{index}")
    for index, status in enumerate(statuses):
        tracker.observe("email", status, T + 1000 + index, None, f"o{index}")
    return tracker


def test_percentiles_of_sent_latency():
    summary = _tracker(range(1, 101)).summary(T + 2000)["email"]
    assert summary["sent_p50_seconds"] == 50
    assert summary["sent_p95_seconds"] == 95
    assert summary["outcomes"] == 100


def test_slow_sends_breach_once():
    tracker = _tracker([30] * 10 + [90] * 10)
    changes = tracker.check(T + 2000)
    assert [(c.objective, c.breached) for c in changes] == [("sent_p95_seconds", True)]
    assert changes[0].value == 90
    assert tracker.check(T + 3000) == []
    assert tracker.breached() == {"email": {"sent_p95_seconds"}}


def test_breach_ends_when_window_moves_on():
    tracker = _tracker([90] * 20)
    tracker.check(T + 2000)
    for index in range(20):
        tracker.observe("email", "sent", T + 3_700_000 + index, 5_000)
    changes = tracker.check(T + 3_700_100)
    assert [(c.objective, c.breached) for c in changes] == [("sent_p95_seconds", False)]


def test_bounce_and_failure_rates():
    tracker = _tracker([10] * 16, statuses=["bounced"] * 3 + ["failed"] * 4)
    summary = tracker.summary(T + 5000)["email"]
    assert summary["bounce_rate"] == 3 / 23
    assert summary["failure_rate"] == 4 / 23
    breached = {c.objective for c in tracker.check(T + 5000) if c.breached}
    assert breached == {"bounce_rate", "failure_rate"}


def test_too_few_outcomes_never_breach():
    tracker = _tracker([500] * 9)
    assert tracker.check(T + 2000) == []


def test_rates_count_commands_not_reports():
    tracker = SlaTracker(OBJECTIVES)
    tracker.observe("email", "sent", T, 1_000, "c1")
    tracker.observe("email", "bounced", T + 5, None, "c1")  # the same command bounced after it was sent
    tracker.observe("email", "sent", T + 10, 1_000, "c2")
    tracker.observe("email", "delivered", T + 20, 9_000, "c2")
    summary = tracker.summary(T + 100)["email"]
    assert summary["commands"] == 2
    assert summary["bounce_rate"] == 0.5
    assert summary["delivered_p95_seconds"] == 9
