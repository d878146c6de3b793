"""Rolling out model versions without a restart: watch a model directory, check, swap."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog

from nurture.scoring.model import CARD_FILE, MODEL_FILE, LeadModel, ModelError, ModelMismatchError, load_model

log = structlog.get_logger("nurture.rollout")

# A card that still does not match its model after this long is no write in progress.
MISMATCH_WARNING_SECONDS = 60.0

Stamp = tuple[tuple[int, int], ...]


def directory_stamp(directory: Path) -> Stamp:
    """Return (mtime_ns, size) of the model and card files; missing files count as (0, 0)."""
    stamp = []
    for name in (MODEL_FILE, CARD_FILE):
        try:
            info = (directory / name).stat()
            stamp.append((info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            stamp.append((0, 0))
    return tuple(stamp)


@dataclass
class ModelSlot:
    """One watched model directory (the live model or the shadow candidate) and its model."""

    role: str  # "live" or "shadow"
    directory: Path
    model: LeadModel
    stamp: Stamp
    on_swap: Callable[[LeadModel], None]
    rejected: dict[str, str] | None = None  # the last refused files: error and time
    _mismatch: tuple[Stamp, float, bool] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, role: str, directory: str | Path, on_swap: Callable[[LeadModel], None]) -> "ModelSlot":
        """Load the directory's model now; raise ModelError if it cannot serve."""
        path = Path(directory)
        stamp = directory_stamp(path)
        model = load_model(path)
        on_swap(model)
        log.info("model_loaded", role=role, version=model.version, directory=str(path))
        return cls(role, path, model, stamp, on_swap)

    def check(self) -> bool:
        """Load a changed directory; return True when a new version was swapped in.

        A model that fails its checks is logged once per change of the files and
        the current model keeps serving. A card that does not match the model text
        means a write is under way, so the next check tries again.
        """
        stamp = directory_stamp(self.directory)
        if stamp == self.stamp:
            return False
        try:
            candidate = load_model(self.directory)
        except ModelMismatchError as exc:
            self._note_mismatch(stamp, exc)
            return False
        except ModelError as exc:
            self.stamp = stamp
            self.rejected = {"error": str(exc), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            log.error("model_rejected", role=self.role, directory=str(self.directory),
                      error=str(exc), serving=self.model.version)
            return False
        self._mismatch = None
        self.rejected = None
        self.stamp = stamp
        if candidate.version == self.model.version:
            return False
        previous = self.model.version
        self.model = candidate
        self.on_swap(candidate)
        log.info("model_swapped", role=self.role, version=candidate.version, previous=previous)
        return True

    def _note_mismatch(self, stamp: Stamp, exc: ModelMismatchError) -> None:
        """Log a card that does not match its model once, and warn if it stays that way."""
        now = time.monotonic()
        if self._mismatch is None or self._mismatch[0] != stamp:
            self._mismatch = (stamp, now, False)
            log.info("model_write_in_progress", role=self.role, directory=str(self.directory),
                     detail=str(exc))
            return
        first_seen, warned = self._mismatch[1], self._mismatch[2]
        if not warned and now - first_seen >= MISMATCH_WARNING_SECONDS:
            self._mismatch = (stamp, first_seen, True)
            self.rejected = {"error": str(exc), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            log.warning("model_card_mismatch", role=self.role, directory=str(self.directory),
                        detail=str(exc), seconds=round(now - first_seen), serving=self.model.version)
