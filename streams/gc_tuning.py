"""Garbage collector settings of the worker process.

The agent allocates dozens of lists and dicts per record, nearly all freed at
once by reference counting. CPython still runs a young-generation collection
every 700 net allocations and, about every hundred of those, a full collection
that walks every tracked object: Faust's state, the scoring model, the row
cache. Timed with ``gc.callbacks`` in the throughput benchmark, collections
took 3 to 4 s of a 25 s run. The worker therefore freezes the objects alive
at start (code, settings, model), which takes them out of every later
collection, and collects the young generation after 50,000 net allocations
instead. Reference cycles are still freed, only in larger steps.
"""

from __future__ import annotations

import gc

import structlog

YOUNG_OBJECTS = 50_000  # net allocations between young-generation collections (CPython: 700)
MIDDLE_COLLECTIONS = 20  # young collections between middle-generation ones (CPython: 10)
FULL_COLLECTIONS = 100  # middle collections between full ones (CPython: 10)
log = structlog.get_logger("nurture.worker")


def tune_gc() -> None:
    """Freeze the objects alive now and set the collection thresholds above."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, MIDDLE_COLLECTIONS, FULL_COLLECTIONS)
    log.info("gc_tuned", frozen_objects=gc.get_freeze_count(), thresholds=list(gc.get_threshold()))
