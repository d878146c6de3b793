"""A record fetched between the seek at the end of recovery and the resume of flow control is kept."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from nurture.streams.faust_recovery import FixedRecovery


def faust_order(stream_queue: FlowControlQueue, delivered: list[asyncio.Task]) -> Any:
    """Return Faust's last step of recovery, which seeks the input partitions and then resumes flow control."""

    async def step(self: Any, generation_id: int = 0) -> None:
        flow_control = self.app.flow_control

        async def on_message(record: str) -> None:  # what Faust's conductor does with a fetched record
            await flow_control.acquire()
            stream_queue.put_nowait(record)

        # The fetcher hands out a record of a partition the seek has just placed.
        delivered.append(asyncio.ensure_future(on_message("form-2@0")))
        await asyncio.sleep(0)
        flow_control.resume()  # empties the stream queues

    return step


@pytest.mark.parametrize("method", ["on_recovery_completed", "_resume_streams"])
def test_record_fetched_after_seek_reaches_stream(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    async def run() -> list[str]:
        flow_control = FlowControlEvent(initially_suspended=False)  # on since the changelogs were read
        stream_queue = FlowControlQueue(flow_control=flow_control, clear_on_resume=True)
        delivered: list[asyncio.Task] = []
        monkeypatch.setattr(Recovery, method, faust_order(stream_queue, delivered))
        recovery: Any = object.__new__(FixedRecovery)
        recovery.app = SimpleNamespace(flow_control=flow_control)

        await getattr(FixedRecovery, method)(recovery, 0)
        await asyncio.gather(*delivered)
        return [stream_queue.get_nowait() for _ in range(stream_queue.qsize())]

    assert asyncio.run(run()) == ["form-2@0"]


def test_flow_control_on_after_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> bool:
        flow_control = FlowControlEvent(initially_suspended=False)
        stream_queue = FlowControlQueue(flow_control=flow_control, clear_on_resume=True)
        monkeypatch.setattr(Recovery, "on_recovery_completed", faust_order(stream_queue, []))
        recovery: Any = object.__new__(FixedRecovery)
        recovery.app = SimpleNamespace(flow_control=flow_control)
        await FixedRecovery.on_recovery_completed(recovery, 0)
        return flow_control.is_active()

    assert asyncio.run(run())
