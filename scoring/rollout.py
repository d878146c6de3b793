"""Rolling out model versions without a restart: watch a model directory, check, swap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from nurture.scoring.model import CARD_FILE, MODEL_FILE, LeadModel, ModelError, ModelMismatchError, load_model

log = structlog.get_logger("nurture.rollout")

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
            log.info("model_write_in_progress", role=self.role, directory=str(self.directory),
                     detail=str(exc))
            return False
        except ModelError as exc:
            self.stamp = stamp
            log.error("model_rejected", role=self.role, directory=str(self.directory),
                      error=str(exc), serving=self.model.version)
            return False
        self.stamp = stamp
        if candidate.version == self.model.version:
            return False
        previous = self.model.version
        self.model = candidate
        self.on_swap(candidate)
        log.info("model_swapped", role=self.role, version=candidate.version, previous=previous)
        return True
