"""The audit log of admin calls: one JSON line per call, who, what, which lead, when and the result."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("nurture.audit")


class AuditLog:
    """Appends entries to a JSON Lines file (mode 0600) and logs each one as ``admin_call``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def record(self, who: str, action: str, lead_id: str | None, status: int, result: str,
               client: str = "-", **details: Any) -> dict[str, Any]:
        entry = {"at": time.time_ns() // 1_000_000, "who": who, "action": action, "lead_id": lead_id,
                 "status": status, "result": result, "client": client, **details}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = orjson.dumps(entry) + b"\n"
            with self._lock:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(descriptor, line)
                finally:
                    os.close(descriptor)
        log.info("admin_call", **entry)
        return entry
