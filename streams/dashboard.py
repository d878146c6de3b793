"""The worker's dashboard: a static page and the JSON API it reads, behind the API token.

``register_dashboard`` adds the pages and a sampling timer to the Faust app and
wraps the ingest handler's command output to count what the worker publishes.
Every API response needs ``Authorization: Bearer <[api] token>``. The page itself
contains no data and is served without it; its script sends the token.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import faust
import orjson
import structlog

from nurture.agents.ingest import IngestHandler
from nurture.config.settings import Settings
from nurture.streams import endpoints
from nurture.streams.codecs import decode_command
from nurture.streams.dashboard_data import CommandLog, LeadTally, ThroughputSeries
from nurture.streams.metrics import Metrics

SAMPLE_INTERVAL_SECONDS = 5.0
LEAD_SCAN_INTERVAL_SECONDS = 30.0  # the score and funnel counts are at most this old
SCAN_CHUNK_ROWS = 500  # rows counted between two yields to the event loop
REJECTION_LOG_INTERVAL_SECONDS = 60.0
REJECTION_LOG_MAX_CLIENTS = 1_000  # (status, client) pairs remembered for rate limiting
PAGE_FILE = Path(__file__).with_name("static") / "dashboard.html"
API_HEADERS = {"Cache-Control": "no-store"}
AUTH_REALM = 'Bearer realm="nurture"'

log = structlog.get_logger("nurture.dashboard")

Send = Callable[[bytes, bytes], Awaitable[Any]]


def check_authorization(header: str | None, token: str) -> tuple[int, str] | None:
    """Return (status, message) when a request with this Authorization header is rejected, else None."""
    return identify(header, {"api": token} if token else {})[1]


def api_tokens(token: str, tokens: str) -> dict[str, str]:
    """Return the tokens the API accepts, by the name the audit log records (``[api] token`` is "api")."""
    named = {"api": token} if token else {}
    for pair in tokens.split(","):
        name, _, secret = pair.strip().partition("=")
        if name.strip() and secret.strip():
            named[name.strip()] = secret.strip()
    return named


def identify(header: str | None, tokens: dict[str, str]) -> tuple[str | None, tuple[int, str] | None]:
    """Return (name of the token, None) for an accepted request, else (None, (status, message)).

    Tokens are compared in constant time, each of them, so the time does not tell which one nearly matched.
    """
    if not tokens:
        return None, (401, "the worker has no API token configured; set NURTURE_API_TOKEN "
                           "(or token in the [api] section of the settings file) and restart the worker")
    if header is None or not header.strip():
        return None, (401, "missing Authorization header; send 'Authorization: Bearer <token>' "
                           "with the worker's NURTURE_API_TOKEN")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None, (401, "the Authorization header is not a Bearer token; send 'Authorization: Bearer <token>'")
    given = credentials.strip().encode("utf-8")
    matches = [name for name, token in tokens.items() if hmac.compare_digest(given, token.encode("utf-8"))]
    if not matches:
        return None, (403, "invalid API token")
    return matches[0], None


def build_content_security_policy(page: str) -> str:
    """Return a policy that lets ``page`` run only its own inline script and style and fetch only this origin."""
    hashes = {}
    for tag in ("script", "style"):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        hashes[tag] = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode() + "'"
            for block in blocks) or "'none'"
    return (f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


class _RejectionLog:
    """Logs rejected requests, at most once a minute per status and client, with the count of repeats."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], tuple[float, int]] = {}

    def record(self, status: int, client: str, path: str) -> None:
        now = time.monotonic()
        if len(self._last) >= REJECTION_LOG_MAX_CLIENTS:
            # Forgets pairs whose minute has passed; their next rejection logs a line again.
            self._last = {pair: entry for pair, entry in self._last.items()
                          if now - entry[0] < REJECTION_LOG_INTERVAL_SECONDS}
        last, repeats = self._last.get((status, client), (float("-inf"), 0))
        if now - last < REJECTION_LOG_INTERVAL_SECONDS:
            self._last[(status, client)] = (last, repeats + 1)
            return
        self._last[(status, client)] = (now, 0)
        log.warning("api_request_rejected", status=status, client=client, path=path,
                    repeats_since_last_line=repeats)


class Dashboard:
    """The dashboard's state: the throughput series, the command counts and the cached lead counts."""

    def __init__(self, app: faust.App, tokens: dict[str, str], leads: Any, metrics: Metrics) -> None:
        self.app = app
        self.tokens = tokens
        self.leads = leads
        self.metrics = metrics
        self.commands = CommandLog()
        self.series = ThroughputSeries(_sum_counter(metrics.records_in), _sum_counter(metrics.commands_out),
                                       time.monotonic())
        self.rejections = _RejectionLog()
        self._tally: dict[str, Any] | None = None
        self._tally_at = float("-inf")  # monotonic seconds of the last complete scan
        self._scan_lock = asyncio.Lock()

    def wrap_send(self, send: Send) -> Send:
        """Return ``send`` that also counts each command it publishes."""

        async def send_and_count(key: bytes, value: bytes) -> Any:
            result = await send(key, value)
            try:
                self.commands.observe(decode_command(value))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                log.warning("dashboard_command_not_counted", error=repr(exc))
            return result

        return send_and_count

    def check_request(self, request: Any) -> tuple[str | None, tuple[int, str] | None]:
        """Return (token name, None), or (None, (status, message)) when ``request`` lacks a valid token."""
        who, rejection = identify(request.headers.get("Authorization"), self.tokens)
        if rejection is not None:
            self.rejections.record(rejection[0], request.remote or "-", request.path)
        return who, rejection

    def rejection_response(self, web: Any, request: Any) -> Any | None:
        """Return the 401 or 403 response for a request without a valid token, else None."""
        rejection = self.check_request(request)[1]
        if rejection is None:
            return None
        status, message = rejection
        challenge = AUTH_REALM if status == 401 else f'{AUTH_REALM}, error="invalid_token"'
        return web.json({"error": message}, status=status,
                        headers={**API_HEADERS, "WWW-Authenticate": challenge})

    def sample(self) -> None:
        """Add a point to the throughput and lag series."""
        assigned = {(tp.topic, str(tp.partition)) for tp in self.app.consumer.assignment()}
        lag = sum(sample.value for family in self.metrics.consumer_lag.collect() for sample in family.samples
                  if (sample.labels["topic"], sample.labels["partition"]) in assigned)
        self.series.add(time.time_ns() // 1_000_000, time.monotonic(), _sum_counter(self.metrics.records_in),
                        _sum_counter(self.metrics.commands_out), lag)

    async def overview(self) -> dict[str, Any]:
        """Return the body of the overview API: throughput series, lead counts and command counts."""
        tally = await self._lead_tally() or {**LeadTally().to_json(), "counted_at": None}
        return {
            "app_id": self.app.conf.id,
            "generated_at": time.time_ns() // 1_000_000,
            "sample_interval_seconds": SAMPLE_INTERVAL_SECONDS,
            "throughput": self.series.to_json(),
            "leads_counted_at": tally["counted_at"],
            "leads": tally["leads"],
            "scores": tally["scores"],
            "funnel": tally["funnel"],
            "commands": self.commands.to_json(),
        }

    def find_row(self, lead_id: str) -> tuple[int, bytes] | None:
        """Return (partition, stored row) of the lead from this worker's active partitions, or None."""
        key = lead_id.encode("utf-8")
        for partition, db in self._active_partition_dbs():
            payload = db.get(key)
            if payload is not None:
                return partition, payload
        return None

    async def _lead_tally(self) -> dict[str, Any]:
        """Return the lead counts, counting the table again when the last count is older than the scan interval."""
        async with self._scan_lock:
            fresh = time.monotonic() - self._tally_at < LEAD_SCAN_INTERVAL_SECONDS
            if fresh or self.app.in_recovery or self.app.rebalancing:
                return self._tally or {}
            try:
                tally = await self._count_leads()
            except Exception as exc:  # noqa: BLE001 - a partition closed by a rebalance ends the scan
                log.warning("dashboard_lead_count_failed", error=repr(exc))
                return self._tally or {}
            if tally is not None:
                self._tally = {**tally.to_json(), "counted_at": time.time_ns() // 1_000_000}
                self._tally_at = time.monotonic()
                if tally.unreadable:
                    log.warning("dashboard_rows_unreadable", rows=tally.unreadable)
            return self._tally or {}

    async def _count_leads(self) -> LeadTally | None:
        """Count the rows of the active partitions, yielding to the event loop between chunks.

        Returns None when a rebalance starts during the count, which would make it partial.
        """
        tally = LeadTally()
        offset_key = self.leads.data.offset_key
        for _, db in self._active_partition_dbs():
            for number, (key, payload) in enumerate(db.items(), start=1):
                if key != offset_key:
                    tally.add(payload)
                if number % SCAN_CHUNK_ROWS == 0:
                    await asyncio.sleep(0)
                    if self.app.rebalancing:
                        return None
        return tally

    def _active_partition_dbs(self) -> list[tuple[int, Any]]:
        changelog = self.leads.changelog_topic.get_topic_name()
        partitions = sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == changelog)
        # NOTE: _dbs is private to Faust's RocksDB store (faust-streaming 0.11 to 0.15). It
        # also contains standby partitions, which this worker does not serve.
        dbs = self.leads.data._dbs
        return [(partition, dbs[partition]) for partition in partitions if partition in dbs]


def _sum_counter(counter: Any) -> float:
    """Return the sum of a prometheus Counter over all its labels."""
    return sum(sample.value for family in counter.collect() for sample in family.samples
               if sample.name.endswith("_total"))


def register_dashboard(app: faust.App, settings: Settings, handler: IngestHandler, leads: Any,
                       metrics: Metrics) -> Dashboard:
    """Add the dashboard page, its API and its sampling timer to ``app``; count ``handler``'s commands."""
    dashboard = Dashboard(app, api_tokens(settings.api.token, settings.api.tokens), leads, metrics)
    handler.outputs = dataclasses.replace(handler.outputs,
                                          send_command=dashboard.wrap_send(handler.outputs.send_command))
    page = PAGE_FILE.read_text(encoding="utf-8")
    page_headers = {"Content-Security-Policy": build_content_security_policy(page),
                    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                    "Cache-Control": "no-cache"}

    rejection_response = dashboard.rejection_response

    @app.task
    async def warn_without_token() -> None:
        if not dashboard.tokens:
            log.warning("api_token_missing",
                        detail="the dashboard API answers 401 to every request until NURTURE_API_TOKEN is set")

    @app.timer(interval=SAMPLE_INTERVAL_SECONDS)
    async def sample_dashboard() -> None:
        dashboard.sample()

    @app.page(endpoints.DASHBOARD)
    async def dashboard_page(web: Any, request: Any) -> Any:
        return web.html(page, headers=dict(page_headers))

    @app.page(endpoints.API_OVERVIEW)
    async def overview(web: Any, request: Any) -> Any:
        rejection = rejection_response(web, request)
        if rejection is not None:
            return rejection
        return web.json(await dashboard.overview(), headers=dict(API_HEADERS))

    return dashboard
