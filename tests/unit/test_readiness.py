"""The readiness rule (ready once the tables are first recovered, and from then on) and the assignment log."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.types import TP
from structlog.testing import capture_logs

from nurture.streams.app import is_ready, log_assignment, watch_readiness


def _app(recovered: bool, in_recovery: bool = False, rebalancing: bool = False) -> SimpleNamespace:
    completed = asyncio.Event()
    if recovered:
        completed.set()
    return SimpleNamespace(tables=SimpleNamespace(recovery=SimpleNamespace(completed=completed)),
                           in_recovery=in_recovery, rebalancing=rebalancing)


@pytest.mark.parametrize(("recovered", "in_recovery", "rebalancing", "ready"), [
    (True, False, False, True),
    (False, False, False, False),
    (True, True, False, False),
    (True, False, True, False),
])
def test_ready_only_after_recovery(recovered, in_recovery, rebalancing, ready):
    assert is_ready(_app(recovered, in_recovery, rebalancing)) is ready


def test_stays_ready_through_later_rebalances():
    app = _app(True)
    assert is_ready(app)
    app.rebalancing = True
    app.in_recovery = True
    assert is_ready(app)


def test_gauge_follows_first_recovery():
    class Gauge:
        value = 0

        def set(self, value: int) -> None:
            self.value = value

    async def run() -> tuple[int, int]:
        app, gauge = _app(False), Gauge()
        watching = asyncio.ensure_future(watch_readiness(app, gauge, interval_seconds=0.01))
        await asyncio.sleep(0.05)
        before = gauge.value
        app.tables.recovery.completed.set()
        await asyncio.wait_for(watching, timeout=1.0)
        return before, gauge.value

    assert asyncio.run(run()) == (0, 1)


def test_assignment_lists_input_partitions() -> None:
    assigned = {TP("events.click", 2), TP("events.open", 2), TP("events.click", 0), TP("app-leads-changelog", 1)}

    with capture_logs() as logs:
        log_assignment(assigned, {"events.click", "events.open"}, 6)

    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("input_partitions_assigned", "info")]
    assert logs[0]["partitions"] == [0, 2]


def test_assignment_without_inputs_warns() -> None:
    standby_only = {TP("app-leads-changelog", 1), TP("app-timers-changelog", 1)}

    with capture_logs() as logs:
        log_assignment(standby_only, {"events.click", "events.open"}, 6)

    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("no_input_partitions", "warning")]
    assert "more workers than its input topics have partitions (6)" in logs[0]["hint"]
