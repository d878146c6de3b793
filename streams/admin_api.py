"""The worker's admin API: lead lookup, consent history, export and erasure, each one audited.

Every call needs a bearer token: 401 without one, 403 with a wrong one. A
malformed lead id or body gets 400 with a message. Every call leaves an audit
entry with the token's name, the action, the lead, the time and the result. A
lead is served by the worker that owns its partition; other replicas answer 404.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Awaitable, Callable

import faust
import orjson
from faust.web import Request, Response, View

from nurture.agents.privacy.export import build_export
from nurture.agents.privacy.ledger import entry_key
from nurture.agents.state import decode_lead
from nurture.config.settings import Settings
from nurture.schemas.records import Event
from nurture.streams import endpoints
from nurture.streams.audit import AuditLog
from nurture.streams.codecs import encode_event
from nurture.streams.dashboard import API_HEADERS, Dashboard
from nurture.streams.dashboard_data import build_lead_timeline, check_lead_id

MAX_BODY_BYTES = 4096


class AdminApi:
    def __init__(self, settings: Settings, dashboard: Dashboard, privacy: Any, ledger: Any,
                 send_request: Callable[[bytes, bytes], Awaitable[Any]]) -> None:
        self.dashboard = dashboard
        self.privacy = privacy  # agents.privacy.requests.PrivacyParts
        self.ledger = ledger  # the ledger table
        self.send_request = send_request  # to privacy.requests, outside any transaction
        self.receipts_topic = settings.topics.receipts
        self.audit = AuditLog(settings.privacy.audit_log)

    async def serve(self, web: Any, request: Request, action: str, lead_id: str) -> Response:
        """Check the token and the lead id, run ``action`` and audit the call."""
        who, rejection = self.dashboard.check_request(request)
        client = request.remote or "-"
        if rejection is not None:
            self.audit.record(who or "unauthenticated", action, lead_id, rejection[0], "rejected", client)
            return self.dashboard.rejection_response(web, request)
        problem = check_lead_id(lead_id)
        if problem is None and action == "erase":
            problem = await _body_problem(request)
        if problem is not None:
            self.audit.record(who, action, lead_id, 400, "invalid", client, detail=problem)
            return web.json({"error": problem}, status=400, headers=dict(API_HEADERS))
        status, body = await getattr(self, f"_{action}")(lead_id, who)
        result = "ok" if status < 400 else "not_found"
        self.audit.record(who, action, lead_id, status, result, client, request_id=body.get("request_id"))
        return web.json(body, status=status, headers=dict(API_HEADERS))

    def _row(self, lead_id: str) -> tuple[int, bytes] | None:
        return self.dashboard.find_row(lead_id)

    async def _lookup(self, lead_id: str, who: str) -> tuple[int, dict[str, Any]]:
        found = self._row(lead_id)
        if found is None:
            return 404, _not_here(lead_id)
        row = decode_lead(found[1], lead_id, None)  # the timeline shows no personal data
        return 200, build_lead_timeline(row, self.dashboard.commands.for_lead(lead_id))

    async def _consent(self, lead_id: str, who: str) -> tuple[int, dict[str, Any]]:
        found = self._row(lead_id)
        if found is None:
            return 404, _not_here(lead_id)
        row = decode_lead(found[1], lead_id, None)
        return 200, {"lead_id": lead_id, "consent": row["consent"], "history": self._entries(found[0], row)}

    async def _export(self, lead_id: str, who: str) -> tuple[int, dict[str, Any]]:
        found = self._row(lead_id)
        if found is None:
            return 404, _not_here(lead_id)
        lead = decode_lead(found[1], lead_id, self.privacy.vault)
        return 200, build_export(lead, self._entries(found[0], lead), time.time_ns() // 1_000_000)

    async def _erase(self, lead_id: str, who: str) -> tuple[int, dict[str, Any]]:
        now = time.time_ns() // 1_000_000
        request_id = f"req-{uuid.uuid4()}"
        request = Event("privacy", request_id, lead_id, now, now, {"action": "erase", "requested_by": who})
        await self.send_request(lead_id.encode("utf-8"), encode_event(request, "json"))
        return 202, {"request_id": request_id, "status": "accepted",
                     "detail": f"the worker that owns the lead erases it and publishes a receipt on "
                               f"{self.receipts_topic} with this request id"}

    def _entries(self, partition: int, lead: dict[str, Any]) -> list[dict[str, Any]]:
        # NOTE: _dbs is private to Faust's RocksDB store (faust-streaming 0.11 to 0.15).
        db = self.ledger.data._dbs.get(partition)
        values = [db.get(entry_key(seq)) for _, seq in lead["ledger"]] if db is not None else []
        return [orjson.loads(value) for value in values if value is not None]


async def _body_problem(request: Request) -> str | None:
    body = await request.read()
    if len(body) > MAX_BODY_BYTES:
        return f"the request body has {len(body)} bytes; send none, or a JSON object under {MAX_BODY_BYTES} bytes"
    if body.strip():
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return f"the request body is not JSON: {exc}"
        if not isinstance(parsed, dict):
            return "the request body must be a JSON object"
    return None


def _not_here(lead_id: str) -> dict[str, Any]:
    return {"error": f"lead {lead_id!r} not found on this worker; another replica may hold its partition, "
                     "so ask the worker that owns it"}


def register_admin_api(app: faust.App, settings: Settings, dashboard: Dashboard, privacy: Any,
                       ledger: Any, send_request: Callable[[bytes, bytes], Awaitable[Any]]) -> AdminApi:
    api = AdminApi(settings, dashboard, privacy, ledger, send_request)

    @app.page(endpoints.API_LEAD)
    async def lookup(web: Any, request: Request, lead_id: str) -> Response:
        return await api.serve(web, request, "lookup", lead_id)

    @app.page(endpoints.API_LEAD_CONSENT)
    async def consent(web: Any, request: Request, lead_id: str) -> Response:
        return await api.serve(web, request, "consent", lead_id)

    @app.page(endpoints.API_LEAD_EXPORT)
    async def export(web: Any, request: Request, lead_id: str) -> Response:
        return await api.serve(web, request, "export", lead_id)

    @app.page(endpoints.API_LEAD_ERASE)
    class Erase(View):
        async def post(self, request: Request, lead_id: str) -> Response:
            return await api.serve(self, request, "erase", lead_id)

    return api
