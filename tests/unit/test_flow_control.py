"""Flow control keeps queued records when Faust resumes it while it is on, and empties queues when it was off."""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlQueue

from nurture.streams.faust_fixes import App, _FlowControl


def recovery_end(flow_control: _FlowControl, queue: FlowControlQueue) -> list[str]:
    """Run the last step of Faust's recovery with a record fetched after the seek, and return the queued records.

    Faust seeks the input partitions and then resumes flow control, which was
    already on while the changelogs were read.
    """

    async def run() -> list[str]:
        async def on_message(record: str) -> None:  # what Faust's conductor does with a fetched record
            await flow_control.acquire()
            queue.put_nowait(record)

        await on_message("form-2@0")
        flow_control.resume()
        return [queue.get_nowait() for _ in range(queue.qsize())]

    return asyncio.run(run())


def test_resume_while_on_keeps_records() -> None:
    flow_control = _FlowControl(initially_suspended=False)
    queue = FlowControlQueue(flow_control=flow_control, clear_on_resume=True)

    assert recovery_end(flow_control, queue) == ["form-2@0"]


def test_resume_from_off_empties_queues() -> None:
    flow_control = _FlowControl(initially_suspended=False)
    queue = FlowControlQueue(flow_control=flow_control, clear_on_resume=True)
    queue.put_nowait("click-5@40")  # queued before a rebalance suspended the flow
    flow_control.suspend()

    flow_control.resume()

    assert queue.qsize() == 0
    assert flow_control.is_active()


def test_app_uses_fixed_flow_control() -> None:
    app = App("flow-control-test", broker="memory://")

    assert isinstance(app.flow_control, _FlowControl)
    assert not app.flow_control.is_active()
