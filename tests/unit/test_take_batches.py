"""Batches fill while the previous one is handled, and each is timed from its first event."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import pytest

from nurture.streams.batching import take_batches


def _run(max_events: int, within: float, scenario: Any) -> list[dict[str, Any]]:
    """Run ``scenario(put, seen, hold)`` against an agent that records each batch it takes.

    ``hold`` maps a batch's number (from 1) to the seconds its loop body sleeps.
    """
    # The harness feeds the agent directly; nothing connects to the broker.
    app = faust.App("take-batches-test", broker="kafka://127.0.0.1:9", store="memory://", autodiscover=False)
    seen: list[dict[str, Any]] = []
    hold: dict[int, float] = {}

    @app.agent(value_type=bytes)
    async def batches(stream: Any) -> None:
        async for events in take_batches(stream, max_events, within):
            started = time.monotonic()
            seen.append({"values": [event.value for event in events], "started": started,
                         "acked_before": any(event.message.acked for event in events)})
            await asyncio.sleep(hold.get(len(seen), 0.0))
            seen[-1]["ended"] = time.monotonic()
            seen[-1]["events"] = events

    async def main() -> None:
        async with batches.test_context() as agent:
            async def put(value: bytes) -> None:
                await agent.put(value, key=b"lead")

            await scenario(put, seen, hold)
            await asyncio.sleep(within * 3)

    asyncio.run(main())
    return seen


def test_backlog_full_batches_acked_after() -> None:
    async def scenario(put, seen, hold) -> None:
        for number in range(7):
            await put(b"%d" % number)

    seen = _run(3, 0.2, scenario)

    assert [batch["values"] for batch in seen] == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]
    assert not any(batch["acked_before"] for batch in seen)
    assert all(event.message.acked for batch in seen for event in batch["events"])


def test_lone_event_waits_for_the_window() -> None:
    put_at: list[float] = []

    async def scenario(put, seen, hold) -> None:
        put_at.append(time.monotonic())
        await put(b"only")

    [batch] = _run(10, 0.3, scenario)

    assert batch["values"] == [b"only"]
    assert batch["started"] - put_at[0] >= 0.25


def test_late_event_skips_new_window() -> None:
    """Faust's take_events starts a new window after each batch, but this event has waited long enough."""
    within = 0.4

    async def scenario(put, seen, hold) -> None:
        hold[1] = 1.0  # the first batch takes longer than a window
        await put(b"first")
        while not seen:
            await asyncio.sleep(0.01)
        await put(b"second")

    first, second = _run(10, within, scenario)

    assert second["values"] == [b"second"]
    assert second["started"] - first["ended"] < within / 2


def test_next_batch_capped_during_handling() -> None:
    async def scenario(put, seen, hold) -> None:
        hold[1] = 0.5
        await put(b"a")
        while not seen:
            await asyncio.sleep(0.01)
        for number in range(5):
            await put(b"%d" % number)

    seen = _run(2, 0.2, scenario)

    assert [batch["values"] for batch in seen] == [[b"a"], [b"0", b"1"], [b"2", b"3"], [b"4"]]


@pytest.mark.parametrize(("max_events", "within"), [(0, 0.1), (10, 0.0)])
def test_rejects_invalid_size_or_window(max_events: int, within: float) -> None:
    with pytest.raises(ValueError, match="max_events >= 1 and within > 0 seconds"):
        take_batches(object(), max_events, within)
