"""Erasure and export requests from privacy.requests, carried out by the worker that owns the lead.

An erasure deletes the lead's row (a tombstone in the changelog) and its timer
index entry, drops its data key from memory, records the erasure in the erasure memory
of every worker, and publishes a receipt. Its consent ledger entries stay:
they name the lead by a keyed hash only and prove what consent it gave when.
An export writes the whole opened row and the lead's ledger entries to a
JSON file in ``[privacy] export_dir`` and publishes a receipt naming the file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import structlog

from nurture.agents.privacy.erasure import ErasureMemory
from nurture.agents.privacy.export import build_export
from nurture.agents.privacy.ledger import entry_key
from nurture.agents.privacy.vault import Vault
from nurture.agents.state import decode_lead
from nurture.schemas.records import Event

log = structlog.get_logger("nurture.privacy")

Send = Callable[[bytes, bytes], Awaitable[Any]]


@dataclass
class PrivacyParts:
    """The parts the ingest handler needs for personal data, consent and privacy requests."""

    vault: Vault | None  # None until the worker has loaded the key ring
    erasures: ErasureMemory
    ledger: Any  # streams.ledger_store.LedgerStore
    send_erasure: Send  # to the erasures topic: keyed hash -> erased at
    send_receipt: Send  # to privacy.receipts, keyed by request id
    export_dir: Path
    remaining: tuple[str, ...] = ()  # topics that keep a lead's records until their retention


class PrivacyDesk:
    def __init__(self, parts: PrivacyParts, table: Any, delete_index_entry: Callable[[int, bytes], None],
                 worker_id: str = "") -> None:
        self.parts = parts
        self.table = table
        self.delete_index_entry = delete_index_entry
        self.worker_id = worker_id

    async def handle(self, request: Event, key: bytes, now_ms: int) -> dict[str, Any]:
        """Carry out ``request`` in its record's context and publish its receipt."""
        payload = self.table.get(key)
        lead = decode_lead(payload, request.lead_id, self.parts.vault) if payload is not None else None
        if request.attrs["action"] == "erase":
            receipt = await self._erase(request, key, lead, now_ms)
        else:
            receipt = self._export(request, lead, now_ms)
        receipt.update(request_id=request.event_id, lead_id=request.lead_id, action=request.attrs["action"],
                       requested_by=request.attrs["requested_by"], completed_at=now_ms, worker=self.worker_id)
        await self.parts.send_receipt(request.event_id.encode("utf-8"), orjson.dumps(receipt))
        log.info("privacy_request_done", request_id=request.event_id, action=request.attrs["action"],
                 status=receipt["status"], subject=self.parts.erasures.key("lead", request.lead_id)[:16])
        return receipt

    async def _erase(self, request: Event, key: bytes, lead: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
        last_seen = max((item[0] for item in lead["recent"]), default=0) if lead else 0
        erased_at = max(now_ms, request.event_time, last_seen)
        memory = self.parts.erasures
        for memory_key in memory.keys_of(request.lead_id, lead["profile"] if lead else {}):
            memory.add(memory_key, erased_at)
            await self.parts.send_erasure(memory_key.encode("ascii"), str(erased_at).encode("ascii"))
        self.parts.vault.forget(request.lead_id)
        if lead is None:
            return {"status": "not_found", "erased_at": erased_at, "removed": [], "kept": {},
                    "remaining": list(self.parts.remaining)}
        if lead["due"] is not None:
            self.delete_index_entry(lead["due"], key)
        del self.table[key]
        return {
            "status": "erased", "erased_at": erased_at,
            "removed": ["lead row and its personal data key", "journeys and waiting commands", "timer entry"],
            "kept": {"consent_ledger_entries": len(lead["ledger"]),
                     "subject": memory.key("lead", request.lead_id)},
            "remaining": list(self.parts.remaining),
        }

    def _export(self, request: Event, lead: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
        if lead is None:
            return {"status": "not_found"}
        document = build_export(lead, self.ledger_entries(lead), now_ms)
        directory = self.parts.export_dir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{_safe_name(request.event_id)}.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        return {"status": "exported", "file": str(path)}

    def ledger_entries(self, lead: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the lead's ledger entries, read from the current partition's ledger table."""
        entries = []
        for _, seq in lead["ledger"]:
            value = self.parts.ledger.table.get(entry_key(seq))
            if value is not None:
                entries.append(orjson.loads(value))
        return entries


def _safe_name(request_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in request_id)[:120] or str(time.time_ns())
