"""The dashboard on a real worker: its API behind the token, and its page rendered by headless Chromium."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from html.parser import HTMLParser
from typing import Any, Iterator

import orjson
import pytest

from conftest import Worker, commands_for, read_until, send_event
from factories import BOXES, click, form
from nurture.streams import endpoints

TOKEN = secrets.token_urlsafe(24)
CHARTS = ("throughput", "lag", "scores", "funnel", "commands", "lead-score")
# Headless Chromium that loads only the worker on 127.0.0.1: no first-run pages, no
# update, sync, telemetry or crash-report traffic, and every host name fails to resolve.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability", "--disable-breakpad",
    "--metrics-recording-only", "--no-pings", "--no-proxy-server",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def dashboard_worker(broker, model_dir, tmp_path_factory) -> Iterator[Worker]:
    worker = Worker(tmp_path_factory.mktemp("dashboard"), broker, model_dir, {"NURTURE_API_TOKEN": TOKEN},
                    own_topics=True)
    worker.create_topics()
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def lead_ids(dashboard_worker, producer) -> list[str]:
    """Three leads that filled in a form and clicked, each with a welcome email published."""
    worker = dashboard_worker
    now = int(time.time() * 1000)
    leads = [f"dash-{number}-{uuid.uuid4().hex[:6]}" for number in range(3)]
    for number, lead_id in enumerate(leads):
        send_event(producer, worker.settings, click(lead_id, now - 120_000, "landing"))
        send_event(producer, worker.settings, click(lead_id, now - 90_000, "product_view"))
        send_event(producer, worker.settings, form(lead_id, now - 60_000 + number, "signup",
                                                   fields={"email": f"{lead_id}@example.com"}, consents=BOXES))
    read_until(worker.settings, worker.settings.topics.commands,
               lambda got: len(commands_for(got, set(leads))) >= len(leads), 90, worker)
    return leads


def _get(worker: Worker, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{worker.env['NURTURE_WORKER_WEB_PORT']}{path}"
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _lead_path(lead_id: str) -> str:
    return endpoints.API_LEAD.format(lead_id=urllib.parse.quote(lead_id, safe=""))


def _overview_with_data(worker: Worker, timeout_seconds: float = 45.0) -> dict[str, Any]:
    """Poll the overview until it has two samples, counted leads and commands."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        status, _, body = _get(worker, endpoints.API_OVERVIEW)
        assert status == 200, body
        overview = orjson.loads(body)
        if (len(overview["throughput"]) >= 2 and overview["leads"] >= 3 and overview["commands"]):
            return overview
        if time.monotonic() > deadline:
            raise AssertionError(f"the overview has no data after {timeout_seconds} s: {overview}\n"
                                 f"{worker.log_tail()}")
        time.sleep(1)


def test_api_rejects_requests_without_the_token(dashboard_worker, lead_ids):
    status, headers, body = _get(dashboard_worker, endpoints.API_OVERVIEW, token=None)
    assert status == 401
    assert "Authorization: Bearer" in orjson.loads(body)["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")

    status, _, body = _get(dashboard_worker, endpoints.API_OVERVIEW, token="wrong-token")
    assert status == 403
    assert orjson.loads(body) == {"error": "invalid API token"}

    status, _, _ = _get(dashboard_worker, _lead_path(lead_ids[0]), token="wrong-token")
    assert status == 403


def test_api_rejects_malformed_lead_ids(dashboard_worker, lead_ids):
    status, _, body = _get(dashboard_worker, _lead_path("x" * 201))
    assert status == 400
    assert "maximum is 200" in orjson.loads(body)["error"]

    status, _, body = _get(dashboard_worker, _lead_path("bad\x01id"))
    assert status == 400
    assert "U+0001" in orjson.loads(body)["error"]


def test_api_unknown_lead_is_404(dashboard_worker, lead_ids):
    status, _, body = _get(dashboard_worker, _lead_path("nobody-" + uuid.uuid4().hex))
    assert status == 404
    assert "another replica" in orjson.loads(body)["error"]

    # Lead ids may contain any printable character, also a slash, when percent-encoded.
    status, _, body = _get(dashboard_worker, _lead_path("team/ola ż?#"))
    assert status == 404
    assert "another replica" in orjson.loads(body)["error"]


def test_api_overview_counts_leads_and_commands(dashboard_worker, lead_ids):
    overview = _overview_with_data(dashboard_worker)
    assert sum(item["leads"] for item in overview["scores"]["bins"]) + overview["scores"]["unscored"] == 3
    funnel = {item["stage"]: item["leads"] for item in overview["funnel"]}
    assert list(funnel) == ["subscriber", "lead", "marketing_qualified", "sales_qualified", "customer", "none"]
    assert sum(funnel.values()) == 3
    assert {"journey": "-", "channel": "email", "commands": 3} in overview["commands"]
    assert overview["throughput"][-1].keys() == {"at", "records_in_per_second", "commands_out_per_second",
                                                 "consumer_lag"}


def test_api_lead_timeline(dashboard_worker, lead_ids):
    status, headers, body = _get(dashboard_worker, _lead_path(lead_ids[0]))
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    timeline = orjson.loads(body)
    assert timeline["lead_id"] == lead_ids[0]
    assert [event["kind"] for event in timeline["events"]] == ["click", "click", "form"]
    assert len(timeline["score_changes"]) == 3
    welcome = [command for command in timeline["commands"] if command.get("rule") == "welcome"]
    assert len(welcome) == 1
    assert welcome[0]["status"] == "sent"
    assert welcome[0]["channel"] == "email"
    assert welcome[0]["reasons"]
    assert timeline["score_changes"][-1]["reasons"] == welcome[0]["reasons"]
    assert timeline["stage_history"][-1]["stage"] == "lead"
    assert {(item["channel"], item["granted"]) for item in timeline["consent"]} == {
        ("email", True), ("sms", True), ("push", True), ("phone", True)}
    assert "example.com" not in body.decode()  # the timeline carries no personal data


def test_page_is_served_without_token(dashboard_worker):
    status, headers, body = _get(dashboard_worker, endpoints.DASHBOARD, token=None)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert b'data-chart="throughput"' in body


class _ChartAttributes(HTMLParser):
    """Collects data-points per data-chart of the SVG elements, and the status line's state."""

    def __init__(self) -> None:
        super().__init__()
        self.points: dict[str, int] = {}
        self.status_state: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "svg" and values.get("data-chart"):
            self.points[values["data-chart"]] = int(values.get("data-points") or 0)
        if values.get("id") == "status":
            self.status_state = values.get("data-state")


def test_page_renders_charts_in_chromium(dashboard_worker, lead_ids, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH; `make test` installs Debian's chromium package")
    _overview_with_data(dashboard_worker)
    port = dashboard_worker.env["NURTURE_WORKER_WEB_PORT"]
    url = f"http://127.0.0.1:{port}{endpoints.DASHBOARD}#token={TOKEN}&lead={lead_ids[0]}"
    started = time.monotonic()
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _ChartAttributes()
    dom.feed(result.stdout)
    # Chromium exits with 0 also when the page fails to load, and its log gives the reason.
    chromium_log = "\n".join(line for line in result.stderr.splitlines() if "dbus" not in line)
    assert dom.status_state == "ok", f"DOM:\n{result.stdout[-3000:]}\nChromium log:\n{chromium_log[-2000:]}"
    for name in CHARTS:
        assert dom.points.get(name, 0) > 0, f"chart {name} drew no data: {dom.points}"
    assert f"Lead {lead_ids[0]}: stage lead" in result.stdout
    assert TOKEN not in result.stdout  # the page keeps the token out of the DOM
    assert time.monotonic() - started < 60


def test_worker_log_omits_token(dashboard_worker, lead_ids):
    text = dashboard_worker.log_path.read_text(encoding="utf-8")
    assert "api_request_rejected" in text  # the rejected requests above were logged
    assert TOKEN not in text
