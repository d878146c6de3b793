"""Fixes for Faust's table recovery (faust-streaming 0.15).

- A rebalance that arrives just as recovery ends gives standby partitions no
  start offset, and the seek to None stopped the worker. They are now read
  from their first offset.
- Under exactly-once the last record of a changelog partition is a
  transaction marker, which a read_committed consumer never hands out. Faust
  waits for the offset just below the partition's end and never receives it, so it
  ends recovery only after two idle waits of five seconds each. The whole
  worker stood still for ten seconds at every takeover. Recovery now ends a
  partition once the consumer's position has passed the end and nothing new
  arrived over two checks in a row.
"""

from __future__ import annotations

from typing import Any

import structlog
from faust.tables.recovery import Recovery
from mode import Service

log = structlog.get_logger("nurture.recovery")

END_CHECK_SECONDS = 0.2  # between two looks at the positions of partitions still in recovery


class FixedRecovery(Recovery):
    """Faust's recovery service with the fixes of this module."""

    async def _seek_offsets(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        # NOTE: _seek_offsets is private to Faust's Recovery (faust-streaming 0.15).
        for tp in tps:
            if offsets.get(tp) is None:
                offsets[tp] = -1  # Faust's value for "no offset yet", read from the first record
        await super()._seek_offsets(consumer, tps, offsets, title)

    @Service.task
    async def _end_behind_markers(self) -> None:
        previous: dict[Any, int] = {}
        while not self.should_stop:
            await self.sleep(END_CHECK_SECONDS)
            previous = await self.check_ends(previous)

    async def check_ends(self, previous: dict[Any, int]) -> dict[Any, int]:
        """End each active partition read up to its end; return the candidates for the next check.

        ``previous`` maps the partitions whose position had passed the end at the
        last check to the offset of their last record then. A partition ends
        when it is still there, with the same offset, and the changelog queue
        was empty both times: every record below the position has been applied.
        """
        if not (self.in_recovery and self.app.in_transaction) or self.tables.changelog_queue.qsize():
            return {}
        waiting = self._behind()
        passed: dict[Any, int] = {}
        for tp, offset in waiting.items():
            position = await self.app.consumer.position(tp)
            if position is not None and position > self.active_highwaters[tp]:
                passed[tp] = offset
        # The awaits above let records arrive: look again before changing anything.
        if self.tables.changelog_queue.qsize() or self._behind() != waiting:
            return {}
        for tp, offset in passed.items():
            if previous.get(tp) == offset:
                self.active_offsets[tp] = self.active_highwaters[tp]
                log.info("recovery_partition_ended", topic=tp.topic, partition=tp.partition,
                         offset=offset, end=self.active_highwaters[tp] + 1)
        if waiting and not self.need_recovery():
            # NOTE: what Faust's _slurp_changelogs does when the last partition catches up.
            self.flush_buffers()
            self._set_recovery_ended()
            self.signal_recovery_end.set()
        return {tp: offset for tp, offset in passed.items() if self.active_offsets[tp] == offset}

    def _behind(self) -> dict[Any, int]:
        """Active partitions whose last applied offset is below the end, with that offset."""
        return {tp: offset for tp, offset in self.active_offsets.items()
                if offset is not None and self.active_highwaters.get(tp) is not None
                and offset < self.active_highwaters[tp]}
