"""Avro schemas of the event and command records."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent
COMMAND_SCHEMA_VERSION = 2  # 2 added journey, step, stage, stage_history, recent_activity


@lru_cache(maxsize=None)
def load_schema(name: str) -> Any:
    """Return the parsed schema ``schemas/<name>.avsc`` (``click``, ``command``, ...)."""
    path = SCHEMA_DIR / f"{name}.avsc"
    with path.open(encoding="utf-8") as handle:
        return fastavro.parse_schema(json.load(handle))
