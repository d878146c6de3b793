"""Log lines: transient coordinator errors become warnings, other errors stay."""

from __future__ import annotations

import io
import logging
from typing import Iterator

import faust
import pytest

from nurture.config.settings import LogSettings
from nurture.streams.faust_fixes import Worker as QuietWorker
from nurture.streams.logs import TransientKafkaErrors, logging_config


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_coordinator_retry_logged_as_warning():
    record = _record("aiokafka.consumer.group_coordinator", logging.ERROR,
                     "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError")
    assert TransientKafkaErrors().filter(record)
    assert record.levelno == logging.WARNING
    assert record.levelname == "WARNING"


def test_other_errors_keep_their_level():
    for name, message in (("aiokafka.consumer", "Unexpected error in fetcher"),
                          ("nurture.ingest", "GroupCoordinatorNotAvailableError in a message of ours")):
        record = _record(name, logging.ERROR, message)
        TransientKafkaErrors().filter(record)
        assert record.levelno == logging.ERROR


@pytest.fixture()
def saved_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("worker_class", "library_debug_built"), [(faust.Worker, True), (QuietWorker, False)])
def test_worker_logging_at_warning(saved_logging: None, worker_class: type, library_debug_built: bool) -> None:
    app = faust.App("logs-test", broker="kafka://127.0.0.1:9", autodiscover=False)
    config = logging_config(LogSettings(level="warning", format="json"))
    worker = worker_class(app, loglevel="warn", logging_config=config, stdout=io.StringIO(), stderr=io.StringIO())

    worker._setup_logging()

    assert logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG) is library_debug_built
    assert logging.getLogger("nurture.ingest").isEnabledFor(logging.WARNING)
