"""Structured logging: JSON lines in production, aligned key=value text on a terminal.

The engine logs through structlog; Faust, aiokafka and kafka-python log through the
standard library. Both end in one stderr handler whose structlog formatter renders
every line the same way, so a worker's output is JSON throughout when it is JSON.
"""

from __future__ import annotations

import logging.config
import sys
from typing import Any

import structlog

from nurture.config.settings import LogSettings

_WORKER: dict[str, str] = {}


def set_worker_id(worker_id: str) -> None:
    """Stamp every later log line of this process, the libraries' lines too, with ``worker_id``."""
    _WORKER["worker_id"] = worker_id


def _add_worker_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in _WORKER.items():
        event_dict.setdefault(key, value)
    return event_dict


_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _add_worker_id,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class TransientKafkaErrors(logging.Filter):
    """Log aiokafka's coordinator errors during group start-up as warnings.

    A worker that starts or joins a rebalance requests the group coordinator
    before the broker has one ready, and aiokafka logs each retry at error
    level although it recovers on its own. Alerts on error lines should not fire
    on every start, so those lines go out as warnings; anything else stays.
    """

    TRANSIENT = ("GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("aiokafka") \
                and any(name in record.getMessage() for name in self.TRANSIENT):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def uses_json(settings: LogSettings) -> bool:
    """Tell whether lines are JSON: ``format = auto`` means JSON unless stderr is a terminal."""
    return settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())


def logging_config(settings: LogSettings) -> dict[str, Any]:
    """Build the ``logging.config.dictConfig`` mapping; Faust's worker applies it too."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if uses_json(settings) else structlog.dev.ConsoleRenderer()
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if uses_json(settings):
        final.append(structlog.processors.dict_tracebacks)
    final.append(renderer)

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "nurture": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": final,
                "foreign_pre_chain": list(_SHARED_PROCESSORS),
            },
        },
        "filters": {"transient": {"()": TransientKafkaErrors}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "nurture",
                "filters": ["transient"],
            },
        },
        "root": {"level": settings.level.upper(), "handlers": ["stderr"]},
        # kafka-python logs every connection step at info level, and warns about
        # things that are normal here (Faust's group metadata, auto-commit off).
        "loggers": {"kafka": {"level": _quiet_unless_debug(settings.level)}},
    }


def _quiet_unless_debug(level: str) -> str:
    return "DEBUG" if level == "debug" else "ERROR"


def configure_logging(settings: LogSettings) -> None:
    """Route structlog and standard-library logging to one stderr handler."""
    logging.config.dictConfig(logging_config(settings))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
