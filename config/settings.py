"""Engine settings: defaults, then a TOML file, then environment variables.

The settings file is the one named by ``NURTURE_CONFIG``, else ``nurture.toml``
in the working directory when it exists. Every key can be overridden by an
environment variable ``NURTURE_<SECTION>_<KEY>`` (for example
``NURTURE_KAFKA_PARTITIONS=12``); ``NURTURE_BROKER`` is a short form of
``NURTURE_KAFKA_BROKER``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nurture.config.errors import ConfigError

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_RULES_FILE = PACKAGE_CONFIG_DIR / "rules.toml"
DEFAULT_JOURNEYS_FILE = PACKAGE_CONFIG_DIR / "journeys.toml"
DEFAULT_TEMPLATES_DIR = PACKAGE_CONFIG_DIR / "templates"
EVENT_KINDS = ("click", "open", "form")
CODECS = ("json", "avro")
PROCESSING_GUARANTEES = ("exactly_once", "at_least_once")


@dataclass(frozen=True)
class KafkaSettings:
    broker: str = "kafka://127.0.0.1:9092"
    partitions: int = 6
    replication_factor: int = 1
    admin_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class TopicSettings:
    click: str = "events.click"
    open: str = "events.open"
    form: str = "events.form"
    commands: str = "nurture.commands"
    deadletter: str = "nurture.deadletter"
    feedback: str = "nurture.feedback"  # delivery outcomes from delivery workers

    def event_topic(self, kind: str) -> str:
        return str(getattr(self, kind))

    def event_topics(self) -> tuple[str, ...]:
        return tuple(self.event_topic(kind) for kind in EVENT_KINDS)

    def keyed_by_lead(self) -> tuple[str, ...]:
        """Input topics whose partitions must line up with the lead table's."""
        return (*self.event_topics(), self.feedback)

    def all_topics(self) -> tuple[str, ...]:
        return (*self.event_topics(), self.feedback, self.commands, self.deadletter)


@dataclass(frozen=True)
class CodecSettings:
    """Payload format of each event topic: ``json`` or ``avro`` (schemaless binary)."""

    click: str = "json"
    open: str = "json"
    form: str = "json"
    feedback: str = "json"

    def for_kind(self, kind: str) -> str:
        return str(getattr(self, kind))


@dataclass(frozen=True)
class WorkerSettings:
    app_id: str = "nurture"
    data_dir: str = "var/worker"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    model_dir: str = "var/model"
    rules_file: str = str(DEFAULT_RULES_FILE)
    recent_event_ids: int = 64
    model_check_seconds: float = 10.0  # how often the worker looks for a new model version
    shadow_model_dir: str = ""  # a candidate model scored beside the live one; empty: none
    batch_max_events: int = 500
    batch_max_wait_ms: int = 20
    journeys_file: str = str(DEFAULT_JOURNEYS_FILE)
    timer_check_ms: int = 500  # how often the worker looks for due journey waits and deferred commands
    # A file holding the current time in epoch milliseconds, read instead of the system
    # clock; for tests and drills that move time forward. Empty: the system clock.
    clock_file: str = ""
    # "exactly_once": Kafka transactions (docs/architecture.md); "at_least_once": plain commits.
    processing_guarantee: str = "exactly_once"
    table_standby_replicas: int = 1  # other workers that keep a copy of each table partition
    session_timeout_seconds: float = 60.0  # a silent worker loses its partitions after this long


@dataclass(frozen=True)
class DeliverSettings:
    """The reference email delivery worker, ``nurture deliver``."""

    group_id: str = "nurture-deliver"  # Kafka consumer group on the commands topic
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""  # empty: no SMTP authentication
    smtp_password_env: str = "SMTP_PASSWORD"  # environment variable with the password, read only when smtp_user is set
    smtp_timeout_seconds: float = 30.0
    from_address: str = "nurture@localhost"
    templates_dir: str = str(DEFAULT_TEMPLATES_DIR)
    state_dir: str = "var/deliver"  # SQLite file of handled command ids
    max_attempts: int = 3  # SMTP attempts per command, counting the first
    retry_seconds: float = 30.0  # wait between attempts after a temporary failure


@dataclass(frozen=True)
class ApiSettings:
    """The worker's HTTP API and dashboard."""

    # Bearer token every API and dashboard request must carry; empty refuses them all.
    # Set it through NURTURE_API_TOKEN rather than a file under version control.
    token: str = ""


@dataclass(frozen=True)
class SlaSettings:
    """Delivery objectives per channel over a sliding window, from nurture.feedback."""

    sent_p95_seconds: float = 300.0  # command created to sent, 95th percentile
    delivered_p95_seconds: float = 900.0  # command created to delivered, 95th percentile
    bounce_rate: float = 0.05  # commands that bounced / commands with an outcome
    failure_rate: float = 0.02  # commands that failed / commands with an outcome
    window_seconds: float = 3600.0
    min_outcomes: int = 20  # fewer outcomes in the window are too few to judge


@dataclass(frozen=True)
class LogSettings:
    format: str = "auto"  # auto: JSON unless stderr is a terminal
    level: str = "info"


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    codecs: CodecSettings = field(default_factory=CodecSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    log: LogSettings = field(default_factory=LogSettings)
    deliver: DeliverSettings = field(default_factory=DeliverSettings)
    sla: SlaSettings = field(default_factory=SlaSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    source: str = "defaults"

    @property
    def bootstrap_servers(self) -> str:
        """Broker list without the ``kafka://`` scheme, as kafka-python wants it."""
        return ",".join(
            server.strip().removeprefix("kafka://")
            for server in self.kafka.broker.replace(";", ",").split(",")
            if server.strip()
        )

    @property
    def timers_topic(self) -> str:
        """Internal topic that carries due-timer notices, one per app like Faust's changelogs."""
        return f"{self.worker.app_id}-timers"


_SECTIONS: dict[str, type] = {
    "kafka": KafkaSettings,
    "topics": TopicSettings,
    "codecs": CodecSettings,
    "worker": WorkerSettings,
    "log": LogSettings,
    "deliver": DeliverSettings,
    "sla": SlaSettings,
    "api": ApiSettings,
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("codecs", "click"): CODECS,
    ("codecs", "open"): CODECS,
    ("codecs", "form"): CODECS,
    ("codecs", "feedback"): CODECS,
    ("worker", "processing_guarantee"): PROCESSING_GUARANTEES,
    ("log", "format"): ("auto", "json", "console"),
    ("log", "level"): ("debug", "info", "warning", "error"),
}
_ENV_ALIASES = {"NURTURE_BROKER": ("kafka", "broker")}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from defaults, the settings file and the environment.

    Raises ConfigError naming the file (or variable), the key and the problem.
    """
    environ = os.environ if environ is None else environ
    file_path = _settings_path(path, environ)
    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    where: dict[tuple[str, str], str] = {}

    if file_path is not None:
        _merge_file(file_path, values, where)
    _merge_environment(environ, values, where)

    sections = {
        name: _build_section(name, cls, values[name], where)
        for name, cls in _SECTIONS.items()
    }
    source = str(file_path) if file_path is not None else "defaults"
    if any(place.startswith("environment variable") for place in where.values()):
        source += " and environment variables"

    return Settings(**sections, source=source)


def _settings_path(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    if path is not None:
        chosen = Path(path)
    elif environ.get("NURTURE_CONFIG"):
        chosen = Path(environ["NURTURE_CONFIG"])
    else:
        default = Path("nurture.toml")
        return default if default.is_file() else None
    if not chosen.is_file():
        raise ConfigError(
            f"settings file {chosen} not found; create it or unset NURTURE_CONFIG"
        )
    return chosen


def _merge_file(
    path: Path, values: dict[str, dict[str, Any]], where: dict[tuple[str, str], str]
) -> None:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read settings file: {exc}") from exc

    for section, table in document.items():
        if section not in _SECTIONS:
            known = ", ".join(f"[{name}]" for name in _SECTIONS)
            raise ConfigError(f"{path}: unknown section [{section}]; known: {known}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of keys")
        for key, value in table.items():
            values[section][key] = value
            where[(section, key)] = f"{path}: [{section}] {key}"


def _merge_environment(
    environ: Mapping[str, str],
    values: dict[str, dict[str, Any]],
    where: dict[tuple[str, str], str],
) -> None:
    _check_variable_names(environ)
    for variable, (section, key) in _ENV_ALIASES.items():
        if environ.get(variable):
            values[section][key] = environ[variable]
            where[(section, key)] = f"environment variable {variable}"

    for section, cls in _SECTIONS.items():
        for spec in dataclasses.fields(cls):
            variable = f"NURTURE_{section}_{spec.name}".upper()
            if variable in environ:
                values[section][spec.name] = environ[variable]
                where[(section, spec.name)] = f"environment variable {variable}"


def _known_variables() -> set[str]:
    names = {"NURTURE_CONFIG", *_ENV_ALIASES}
    for section, cls in _SECTIONS.items():
        names.update(f"NURTURE_{section}_{spec.name}".upper() for spec in dataclasses.fields(cls))
    return names


def _check_variable_names(environ: Mapping[str, str]) -> None:
    """Reject misspelled NURTURE_* variables, which would otherwise be ignored."""
    known = _known_variables()
    for variable in environ:
        if variable.startswith("NURTURE_") and variable not in known:
            close = difflib.get_close_matches(variable, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see the README for the settings"
            raise ConfigError(f"environment variable {variable} is not a Nurture setting{hint}")


def _build_section(
    name: str, cls: type, raw: dict[str, Any], where: dict[tuple[str, str], str]
) -> Any:
    known = {spec.name: spec for spec in dataclasses.fields(cls)}
    converted: dict[str, Any] = {}
    for key, value in raw.items():
        place = where.get((name, key), f"[{name}] {key}")
        if key not in known:
            raise ConfigError(
                f"{place}: unknown key; [{name}] takes {', '.join(sorted(known))}"
            )
        default = known[key].default
        converted[key] = _convert(value, default, place)
        choices = _CHOICES.get((name, key))
        if choices and converted[key] not in choices:
            raise ConfigError(
                f"{place}: {converted[key]!r} is not one of {', '.join(choices)}"
            )
    settings = cls(**converted)
    _check_ranges(name, settings, where)

    return settings


def _convert(value: Any, default: Any, place: str) -> Any:
    """Convert a file or environment value to the type of the key's default."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{place}: expected true or false, got {value!r}")
    if isinstance(default, int):
        try:
            if isinstance(value, float) or isinstance(value, bool):
                raise ValueError(value)
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{place}: expected a whole number, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{place}: expected a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{place}: expected text, got {value!r}")

    return value


def _check_ranges(
    name: str, settings: Any, where: dict[tuple[str, str], str]
) -> None:
    minimums = {
        ("kafka", "partitions"): 1,
        ("kafka", "replication_factor"): 1,
        ("worker", "web_port"): 1,
        ("worker", "recent_event_ids"): 1,
        ("worker", "model_check_seconds"): 1,
        ("worker", "batch_max_events"): 1,
        ("worker", "batch_max_wait_ms"): 1,
        ("worker", "timer_check_ms"): 10,
        ("worker", "table_standby_replicas"): 0,
        ("worker", "session_timeout_seconds"): 6,
        ("deliver", "smtp_port"): 1,
        ("deliver", "smtp_timeout_seconds"): 1,
        ("deliver", "max_attempts"): 1,
        ("deliver", "retry_seconds"): 0,
        ("sla", "window_seconds"): 60,
        ("sla", "min_outcomes"): 1,
    }
    for (section, key), minimum in minimums.items():
        if section != name:
            continue
        value = getattr(settings, key)
        if value < minimum:
            place = where.get((section, key), f"[{section}] {key}")
            raise ConfigError(f"{place}: must be at least {minimum}, got {value}")
    if name == "kafka":
        _check_broker(settings.broker, where.get(("kafka", "broker"), "[kafka] broker"))


def _check_broker(broker: str, place: str) -> None:
    """Accept ``kafka://host:port`` or ``host:port`` entries separated by ``;`` or ``,``."""
    entries = [entry.strip() for entry in broker.replace(";", ",").split(",") if entry.strip()]
    if not entries:
        raise ConfigError(f"{place}: empty; set it like kafka://127.0.0.1:9092")
    for entry in entries:
        address = entry.removeprefix("kafka://")
        host, _, port = address.rpartition(":")
        if "://" in address or not host or not port.isdigit():
            raise ConfigError(
                f"{place}: {entry!r} is not a broker address; use kafka://HOST:PORT "
                "(several separated by ';')"
            )
