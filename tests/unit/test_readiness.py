"""The readiness rule: ready once the tables are first recovered, and from then on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from nurture.streams.app import is_ready, watch_readiness


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
