"""The readiness rule: ready once the tables are first recovered, and from then on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from nurture.streams.app import is_ready


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
