"""Fault drills: a steady event load, the outcome an offline run expects, and what the topics hold.

The fault tests produce the events of ``drill_events`` at a steady rate while
workers are killed or the broker restarts. Then they compare the commands and
lead rows on the topics with ``expected_outcome``. It runs the same pipeline
code offline, event by event, without faults.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from factories import BOXES, DAY_MS, HOUR_MS, T0, TEST_KEYS, click, form
from nurture.agents.journeys.loader import load_journeys
from nurture.agents.pipeline import Runtime, process_event
from nurture.agents.privacy.keys import parse_keys
from nurture.agents.privacy.vault import Vault
from nurture.agents.rules import load_rules
from nurture.agents.state import decode_lead, new_lead
from nurture.config.settings import Settings
from nurture.schemas.records import Event
from nurture.scoring.model import load_model
from nurture.streams.codecs import encode_event
from nurture.streams.leads import changelog_topic
from nurture.streams.report import read_topic

log = logging.getLogger("drill")

# The parts of a lead row that depend on its events alone. Command creation times and
# the like follow the worker clock, so they differ between any two runs.
STATE_KEYS = ("features", "profile", "score", "probability", "score_history", "stage",
              "fired_once", "seen", "journeys", "sends", "consent")
BUYER_PAGES = ("home", "product_view", "product_view", "add_to_cart", "cart", "shipping_details",
               "payment_details", "product_view", "review_page", "cart")
BROWSER_PAGES = ("home", "catalog", "search", "product_view", "promo_page", "compare")


def drill_events(run: str, leads: int) -> list[Event]:
    """Return the drill's events in the order they are produced.

    Half the leads sign up and fill in forms, and cross the hand-off score. The
    other half browse, and half of those fill a cart. Each lead's events stay on one topic, where
    Kafka keeps their order, so a worker folds them in the order an offline run
    does. The leads take turns, so every lead's events spread over the whole load.
    """
    per_lead = []
    for number in range(leads):
        lead = f"{run}-{number:04d}"
        start = T0 + number * 60_000
        if number % 2 == 0:
            profile = {"email": f"{lead}@example.com", "first_name": "Ada"}
            per_lead.append([
                form(lead, start, fields=profile, consents=BOXES),
                form(lead, start + 4 * DAY_MS, name="newsletter", fields=profile),
                form(lead, start + 5 * DAY_MS, name="shipping"),
                form(lead, start + 5 * DAY_MS + HOUR_MS, name="payment", conversion=True),
            ])
        else:
            pages = BUYER_PAGES if number % 4 == 1 else BROWSER_PAGES
            per_lead.append([click(lead, start + step * 600_000, page=page, session_id=f"s-{lead}")
                             for step, page in enumerate(pages)])
    longest = max(len(events) for events in per_lead)
    return [events[turn] for turn in range(longest) for events in per_lead if turn < len(events)]


@dataclass
class Outcome:
    commands: dict[str, dict[str, Any]]  # by command id
    rows: dict[str, dict[str, Any]]  # by lead id


def expected_outcome(settings: Settings, events: list[Event]) -> Outcome:
    """Run ``events`` through the pipeline offline, with the worker's model, rules and journeys."""
    worker = settings.worker
    runtime = Runtime(model=load_model(worker.model_dir), rules=load_rules(worker.rules_file),
                      recent_event_ids=worker.recent_event_ids, book=load_journeys(worker.journeys_file))
    rows: dict[str, dict[str, Any]] = {}
    commands: dict[str, dict[str, Any]] = {}
    for event in events:
        lead = rows.setdefault(event.lead_id, new_lead(event.lead_id))
        for command in process_event(lead, event, runtime).commands:
            assert command["command_id"] not in commands, "the offline run repeated a command id"
            commands[command["command_id"]] = command
    return Outcome(commands, rows)


def state_of(row: dict[str, Any]) -> dict[str, Any]:
    """Return the event-driven part of a lead row, as JSON would round-trip it."""
    return orjson.loads(orjson.dumps({key: row.get(key) for key in STATE_KEYS}))


@dataclass
class Load:
    """Event load that a thread produces at a steady rate. A failed send is sent again, in order."""

    settings: Settings
    events: list[Event]
    rate: float  # events per second
    sent: int = 0
    resent: int = 0
    error: BaseException | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drill-load", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the load did not finish in {timeout:.0f} s: {self.sent} of {len(self.events)} sent")
        if self.error is not None:
            raise AssertionError(f"the load failed after {self.sent} events: {self.error!r}")

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                                 retries=5, request_timeout_ms=10_000, reconnect_backoff_max_ms=2_000)
        tick = 0.25
        step = max(1, round(self.rate * tick))
        started = last_report = time.monotonic()
        try:
            while self.sent < len(self.events):
                chunk = self.events[self.sent:self.sent + step]
                self._send(producer, chunk)
                self.sent += len(chunk)
                now = time.monotonic()
                if now - last_report >= 5.0:
                    log.info("load: %d of %d events sent, %d sent again", self.sent, len(self.events), self.resent)
                    last_report = now
                time.sleep(max(0.0, started + self.sent / self.rate - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self.error = exc
        finally:
            producer.close(timeout=10)

    def _send(self, producer: KafkaProducer, chunk: list[Event]) -> None:
        """Send ``chunk`` until the broker has all of it.

        The leads of a chunk differ, so sending part of it again keeps each lead's order.
        """
        pending = chunk
        deadline = time.monotonic() + 120.0
        while pending:
            futures = [(event, producer.send(self.settings.topics.event_topic(event.kind), key=event.lead_id.encode(),
                                             value=encode_event(event, self.settings.codecs.for_kind(event.kind))))
                       for event in pending]
            failed = []
            for event, future in futures:
                try:
                    future.get(timeout=30)
                except Exception:  # noqa: BLE001 - the broker may be restarting
                    failed.append(event)
            if failed and time.monotonic() > deadline:
                raise AssertionError(f"{len(failed)} events could not be sent for 120 s")
            if failed:
                self.resent += len(failed)
                time.sleep(1.0)
            pending = failed


def read_commands(settings: Settings) -> Counter[str]:
    """Count the committed commands on the commands topic by command id."""
    return Counter(orjson.loads(record.value)["command_id"] for record in read_topic(settings, settings.topics.commands))


def read_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    """Return the latest committed row of every lead in the lead table's changelog."""
    latest = {record.key: record.value for record in read_topic(settings, changelog_topic(settings))}
    vault = Vault(parse_keys(TEST_KEYS, "test keys"))
    return {key.decode(): decode_lead(value, key.decode(), vault) for key, value in latest.items() if value is not None}


def transaction_markers(settings: Settings, topic: str) -> int:
    """Return how many offsets of ``topic`` contain no record: the markers that end transactions."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    return sum(ends.values()) - len(read_topic(settings, topic))


def group_is_stable(settings: Settings, members: int) -> bool:
    """Return True when the worker group has ``members`` members and no rebalance under way."""
    app_id = settings.worker.app_id
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        state = admin.describe_groups([app_id]).get(app_id) or {}
    except KafkaError:  # a new broker has no group coordinator for a moment
        return False
    finally:
        admin.close()
    return len(state.get("members") or []) == members and state.get("group_state") == "Stable"
