"""Log lines: transient coordinator errors become warnings, other errors stay."""

from __future__ import annotations

import logging

from nurture.streams.logs import TransientKafkaErrors


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
