"""The worker's Prometheus metrics, in a registry of its own.

Names follow Prometheus conventions: a ``nurture_`` prefix, base units in the
name (seconds, records) and ``_total`` on counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DELIVERY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    """Every metric the worker serves; the ingest handler and the app's timers update them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.records_in = Counter("nurture_records_total", "Records read, by input topic.",
                                  ["topic"], registry=registry)
        self.dead_letters = Counter("nurture_dead_letters_total", "Records sent to the dead-letter topic, by reason.",
                                    ["reason"], registry=registry)
        self.commands_out = Counter("nurture_commands_total", "Commands published, by action and channel.",
                                    ["action", "channel"], registry=registry)
        self.commands_deferred = Counter(
            "nurture_commands_deferred_total",
            "Commands put in a lead's outbox, by reason (quiet_hours, frequency_cap).", ["reason"], registry=registry)
        self.commands_dropped = Counter(
            "nurture_commands_dropped_total",
            "Commands dropped, by reason (no_consent, consent_withdrawn, channel_blocked, no_email, stale, ...).",
            ["reason"], registry=registry)
        self.records_skipped = Counter(
            "nurture_records_skipped_total",
            "Valid records not applied, by reason (erased_lead: from before the lead's erasure).",
            ["reason"], registry=registry)
        self.agent_seconds = Counter(
            "nurture_agent_seconds_total",
            "Wall-clock time of the ingest agent, by phase: records (waiting for a batch), commit (waiting "
            "for a commit to end), handle, settle (waiting for the broker to acknowledge the batch's "
            "outputs) and ack.", ["phase"], registry=registry)
        self.row_cache_reads = Counter(
            "nurture_row_cache_reads_total",
            "Stored lead rows read by the agent: hit (taken from the row cache) or miss (parsed).",
            ["result"], registry=registry)
        self.row_cache_leads = Gauge("nurture_row_cache_leads", "Decoded lead rows held in the row cache.",
                                     registry=registry)
        self.batch_records = Histogram("nurture_scoring_batch_records", "Events scored together in one model call.",
                                       buckets=BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("nurture_scoring_batch_seconds",
                                       "Time to score a batch and apply its rules and journeys.",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.event_to_command_seconds = Histogram(
            "nurture_event_to_command_seconds",
            "From an event's produced_at to the publication of a command it triggered.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.consumer_lag = Gauge("nurture_consumer_lag_records",
                                  "Records on an input partition not yet committed by this worker.",
                                  ["topic", "partition"], registry=registry)
        self.recovery_remaining = Gauge("nurture_table_recovery_remaining_records",
                                        "Changelog records this worker still has to read to recover its tables.",
                                        registry=registry)
        self.ready = Gauge("nurture_ready", "1 once the tables are recovered and the agent consumes.",
                           registry=registry)
        self.timers_due = Gauge("nurture_timers_due", "Timer index entries due at the last check.",
                                registry=registry)
        self.timers_overdue = Gauge("nurture_timers_overdue",
                                    "Timer index entries due more than two seconds before the last check.",
                                    registry=registry)

        self.delivery_seconds = Histogram(
            "nurture_delivery_seconds", "From a command's creation to a delivery outcome, by channel and status.",
            ["channel", "status"], buckets=DELIVERY_BUCKETS, registry=registry)
        self.delivery_outcomes = Counter("nurture_delivery_outcomes_total",
                                         "Delivery outcomes reported on the feedback topic, by channel and status.",
                                         ["channel", "status"], registry=registry)
        self.sla_breached = Gauge("nurture_sla_breached",
                                  "1 while a channel misses a delivery objective over the SLA window.",
                                  ["channel", "objective"], registry=registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PhaseClock:
    """Adds the wall-clock time since the previous mark to a phase of ``nurture_agent_seconds_total``."""

    PHASES = ("records", "commit", "handle", "settle", "ack")

    def __init__(self, metrics: Metrics) -> None:
        self._counters = {phase: metrics.agent_seconds.labels(phase) for phase in self.PHASES}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """Count the time since the previous mark as ``phase``."""
        now = time.perf_counter()
        self._counters[phase].inc(now - self._last)
        self._last = now
