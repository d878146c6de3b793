"""Reading the topics for ``nurture report campaigns`` and writing its rows as CSV or Parquet.

The counting itself, and what each column means, is in ``streams/campaigns.py``.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from nurture.config.errors import NurtureError
from nurture.config.settings import EVENT_KINDS, Settings
from nurture.schemas.records import Event
from nurture.streams.campaigns import (
    COLUMNS,
    COUNT_COLUMNS,
    KEY_COLUMNS,
    RATE_COLUMNS,
    CampaignRow,
    CampaignTally,
    InvalidCommand,
    ReportWindow,
)
from nurture.streams.codecs import DecodeError, decode_event
from nurture.streams.kafka_clients import connect

log = structlog.get_logger("nurture.report")

FORMATS = ("csv", "parquet")
BOOTSTRAP_TIMEOUT_MS = 10_000
PROGRESS_SECONDS = 5.0
# Maximum time without progress while a topic's end is still ahead, as when the broker went away.
STALL_SECONDS = 60.0


class CampaignReportError(NurtureError):
    """The campaign report could not read its topics or write its file."""


@dataclass
class ReadStats:
    records: Counter[str] = field(default_factory=Counter)  # per topic
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # per topic and reason

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class ExportResult:
    rows: int
    commands: int  # commands in the range, summed over the rows
    stats: ReadStats
    repeated_commands: int


def export_campaigns(settings: Settings, window: ReportWindow, out_path: str | Path, file_format: str,
                     progress_seconds: float = PROGRESS_SECONDS) -> ExportResult:
    """Read the topics, count the commands in ``window`` and write the rows to ``out_path``.

    The output location is checked before the topics are read, and the file
    appears only complete, by a rename. Raises CampaignReportError.
    """
    if file_format not in FORMATS:
        raise CampaignReportError(f"format {file_format!r} is not one of {', '.join(FORMATS)}")
    output = PendingFile(Path(out_path))
    try:
        tally, stats = read_tally(settings, progress_seconds)
        rows = tally.rows(window)
        output.write(rows, file_format)
    except BaseException:
        output.discard()
        raise

    return ExportResult(len(rows), sum(row.commands for row in rows), stats, tally.repeated_commands)


def format_summary(result: ExportResult, out_path: str | Path) -> str:
    """Describe an export in a few lines for the terminal."""
    lines = [f"wrote {_count(result.rows, 'row')} ({_count(result.commands, 'command')}) to {out_path}"]
    if result.repeated_commands:
        lines.append(f"ignored {_count(result.repeated_commands, 'repeated command record')} "
                     "(a command_id published before)")
    skipped = _count(result.stats.skipped_total, "record")
    if result.stats.skipped_total:
        details = ", ".join(f"{topic} {reason} {count}"
                            for (topic, reason), count in sorted(result.stats.skipped.items()))
        lines.append(f"skipped {skipped} that could not be decoded: {details}")
    else:
        lines.append(f"skipped {skipped} that could not be decoded")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def read_tally(settings: Settings, progress_seconds: float = PROGRESS_SECONDS) -> tuple[CampaignTally, ReadStats]:
    """Read the command, feedback and event topics from the earliest offset to the current end."""
    tally, stats = CampaignTally(), ReadStats()
    topics = settings.topics
    decoders: list[tuple[str, Callable[[Any], None]]] = [
        (topics.commands, lambda record: tally.add_command(_decode_command(record.value))),
        (topics.feedback, _event_decoder(tally, "feedback", settings.codecs.feedback)),
        *((topics.event_topic(kind), _event_decoder(tally, kind, settings.codecs.for_kind(kind)))
          for kind in EVENT_KINDS),
    ]
    consumer = connect(settings, KafkaConsumer, enable_auto_commit=False, group_id=None,
                       bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, isolation_level="read_committed")
    try:
        for topic, add in decoders:
            for record in _read_topic(consumer, topic, progress_seconds):
                stats.records[topic] += 1
                try:
                    add(record)
                except DecodeError as exc:
                    stats.skipped[(topic, exc.reason)] += 1
                except InvalidCommand:
                    stats.skipped[(topic, "command_invalid")] += 1
    except KafkaError as exc:
        raise CampaignReportError(f"reading the topics from {settings.bootstrap_servers} failed: {exc!r}") from exc
    finally:
        # Closing cancels a metadata request that may be in flight, which kafka-python
        # logs as an error although nothing failed.
        with _kafka_logs_quiet():
            consumer.close()
    if stats.skipped_total:
        by_topic_and_reason = {f"{topic} {reason}": count for (topic, reason), count in stats.skipped.items()}
        log.warning("campaign_records_skipped", skipped=stats.skipped_total, by_topic_and_reason=by_topic_and_reason)
    return tally, stats


def _decode_command(payload: bytes | None) -> Any:
    if not payload:
        raise DecodeError("empty", "the record value is empty")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("json_invalid", f"payload is not valid UTF-8 JSON: {exc}") from exc


def _event_decoder(tally: CampaignTally, kind: str, codec: str) -> Callable[[Any], None]:
    def add(record: Any) -> None:
        event: Event = decode_event(kind, codec, record.value, record.key)
        tally.add_event(event)
    return add


@contextmanager
def _kafka_logs_quiet() -> Iterator[None]:
    """Silence kafka-python's log lines below CRITICAL within the block."""
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(max(level, logging.CRITICAL))
    try:
        yield
    finally:
        kafka_log.setLevel(level)


def _read_topic(consumer: KafkaConsumer, topic: str, progress_seconds: float) -> Iterator[Any]:
    """Yield the records of ``topic`` from the earliest offset to the end it had at the start.

    A topic that does not exist yields nothing. Progress is logged every
    ``progress_seconds``.
    """
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    if not partitions:
        log.warning("campaign_topic_missing", topic=topic, detail="counted as empty")
        return
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    start = consumer.beginning_offsets(partitions)
    end = consumer.end_offsets(partitions)
    total = sum(end[tp] - start[tp] for tp in partitions)
    read = 0
    started = last_progress = time.monotonic()
    next_report = started + progress_seconds
    while True:
        remaining = [tp for tp in partitions if consumer.position(tp) < end[tp]]
        if not remaining:
            break
        got = 0
        for tp, batch in consumer.poll(timeout_ms=1000).items():
            for record in batch:
                if record.offset < end[tp]:
                    got += 1
                    yield record
        read += got
        now = time.monotonic()
        if got:
            last_progress = now
        elif now - last_progress > STALL_SECONDS:
            raise CampaignReportError(
                f"reading {topic} timed out: no progress for {STALL_SECONDS:.0f} s with {total - read} "
                "records left; check that the broker is running")
        if now >= next_report:
            next_report = now + progress_seconds
            log.info("campaign_read_progress", topic=topic, records_read=read, records_total=total,
                     records_per_second=round(read / max(now - started, 1e-9)))
    log.info("campaign_topic_read", topic=topic, records=read, seconds=round(time.monotonic() - started, 1))


class PendingFile:
    """An output file written to a temporary file beside it and renamed into place when complete.

    Creating the temporary file at construction checks early that the
    location is writable; an error names the path and the cause.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            raise CampaignReportError(f"cannot write {path}: it is a directory; give a file name with --out")
        directory = path.parent
        if not directory.exists():
            raise CampaignReportError(f"cannot write {path}: directory {directory} does not exist")
        if not directory.is_dir():
            raise CampaignReportError(f"cannot write {path}: {directory} is not a directory")
        # Opened like any new file, so that the umask sets its permissions.
        self.temporary = directory / f".{path.name}.{os.getpid()}.tmp"
        try:
            self.temporary.open("wb").close()
        except OSError as exc:
            raise CampaignReportError(f"cannot write {path}: {exc.strerror}; choose another --out") from exc

    def write(self, rows: list[CampaignRow], file_format: str) -> None:
        try:
            if file_format == "csv":
                write_csv(rows, self.temporary)
            else:
                write_parquet(rows, self.temporary)
            os.replace(self.temporary, self.path)
        except OSError as exc:
            raise CampaignReportError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def write_csv(rows: list[CampaignRow], path: Path) -> None:
    """Write a header line and one line per row, UTF-8, rates with full float precision."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            values = row.as_dict()
            writer.writerow([values[name] for name in COLUMNS])


def write_parquet(rows: list[CampaignRow], path: Path) -> None:
    """Write the rows as one Parquet table: strings, int64 counts and float64 rates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [pa.field(name, pa.string(), nullable=False) for name in KEY_COLUMNS]
        + [pa.field(name, pa.int64(), nullable=False) for name in COUNT_COLUMNS]
        + [pa.field(name, pa.float64(), nullable=False) for name in RATE_COLUMNS]
    )
    values = [row.as_dict() for row in rows]
    table = pa.Table.from_pydict({name: [value[name] for value in values] for name in COLUMNS}, schema=schema)
    pq.write_table(table, path)
