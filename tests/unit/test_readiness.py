"""The readiness rule: tables recovered and no rebalance under way."""

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
