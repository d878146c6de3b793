"""The worker's garbage collector settings: objects alive at start frozen, young collections rarer."""

from __future__ import annotations

import gc

from nurture.streams.gc_tuning import FULL_COLLECTIONS, MIDDLE_COLLECTIONS, YOUNG_OBJECTS, tune_gc


def test_tune_gc_freezes_and_sets_thresholds() -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        tune_gc()

        assert gc.get_threshold() == (YOUNG_OBJECTS, MIDDLE_COLLECTIONS, FULL_COLLECTIONS)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
