"""Table recovery under exactly-once ends once every record below the end is applied, not after a fixed wait."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from nurture.config.settings import load_settings
from nurture.streams.app import build_app

LEADS = TP("nurture-leads-changelog", 0)
TIMERS = TP("nurture-timers-changelog", 0)


class Consumer:
    def __init__(self, positions: dict[TP, int]) -> None:
        self.positions = positions

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)


def recovery(tmp_path: Path, positions: dict[TP, int], *, in_transaction: bool = True) -> Any:
    """A recovery service in the middle of reading: leads applied up to 40 of 41, timers done."""
    app, _ = build_app(load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path)}))
    service = app.tables.recovery
    service.app = SimpleNamespace(in_transaction=in_transaction, in_recovery=True, consumer=Consumer(positions))
    service.in_recovery = True
    service.active_highwaters.update({LEADS: 41, TIMERS: 7})  # the offsets below the ends, as Faust keeps them
    service.active_offsets.update({LEADS: 40, TIMERS: 7})
    return service


def check_twice(service: Any, between: Any = None) -> dict[TP, int]:
    async def run() -> dict[TP, int]:
        candidates = await service.check_ends({})
        if between is not None:
            between()
        return await service.check_ends(candidates)

    return asyncio.run(run())


def test_end_passed_twice_ends_recovery(tmp_path: Path) -> None:
    service = recovery(tmp_path, {LEADS: 42})  # 41 is the commit marker, never handed out

    async def first() -> dict[TP, int]:
        return await service.check_ends({})

    assert asyncio.run(first()) == {LEADS: 40}
    assert service.in_recovery, "one look is not enough: records may still be on their way to the queue"

    check_twice(service)

    assert service.active_offsets[LEADS] == 41
    assert not service.in_recovery
    assert service.signal_recovery_end.is_set()


def test_record_arriving_between_checks_keeps_recovery_going(tmp_path: Path) -> None:
    service = recovery(tmp_path, {LEADS: 42})
    service.active_offsets[LEADS] = 39  # record 40 is still on its way to the queue at the first check

    check_twice(service, between=lambda: service.active_offsets.__setitem__(LEADS, 40))

    assert service.active_offsets[LEADS] == 40
    assert service.in_recovery


def test_position_below_the_end_keeps_recovery_going(tmp_path: Path) -> None:
    service = recovery(tmp_path, {LEADS: 41})

    assert check_twice(service) == {}
    assert service.active_offsets[LEADS] == 40
    assert service.in_recovery


@pytest.mark.parametrize("in_transaction", [False, True])
def test_no_end_while_queued_or_at_least_once(tmp_path: Path, in_transaction: bool) -> None:
    service = recovery(tmp_path, {LEADS: 42}, in_transaction=in_transaction)
    if in_transaction:
        service.tables.changelog_queue.put_nowait(object())

    assert check_twice(service) == {}
    assert service.active_offsets[LEADS] == 40
    assert service.in_recovery
