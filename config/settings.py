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
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
PROCESSING_GUARANTEES = ("exactly_once", "at_least_once")


@dataclass(frozen=True)
class KafkaSettings:
    broker: str = "kafka://127.0.0.1:9092"
    partitions: int = 6
    replication_factor: int = 1
    admin_timeout_seconds: float = 30.0
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_cafile: str = ""  # PEM file of the CAs that sign the brokers' certificates; empty: the system's CAs
    ssl_certfile: str = ""  # PEM client certificate for mutual TLS; empty: none
    ssl_keyfile: str = ""  # PEM private key of ssl_certfile, unencrypted; empty: the key is in ssl_certfile
    ssl_check_hostname: bool = True  # the broker's certificate must name the host that clients connect to
    sasl_mechanism: str = "SCRAM-SHA-512"  # SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN
    sasl_username: str = ""
    sasl_password_env: str = "KAFKA_SASL_PASSWORD"  # environment variable with the SASL password

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS


@dataclass(frozen=True)
class TopicSettings:
    click: str = "events.click"
    open: str = "events.open"
    form: str = "events.form"
    commands: str = "nurture.commands"
    deadletter: str = "nurture.deadletter"
    feedback: str = "nurture.feedback"  # delivery outcomes from delivery workers
    consent: str = "events.consent"  # consent grants and withdrawals per channel and purpose
    requests: str = "privacy.requests"  # erasure and export requests
    receipts: str = "privacy.receipts"  # what the engine did with each privacy request

    def event_topic(self, kind: str) -> str:
        return str(getattr(self, kind))

    def event_topics(self) -> tuple[str, ...]:
        return tuple(self.event_topic(kind) for kind in EVENT_KINDS)

    def keyed_by_lead(self) -> tuple[str, ...]:
        """Input topics whose partitions must line up with the lead table's."""
        return (*self.event_topics(), self.feedback, self.consent, self.requests)

    def all_topics(self) -> tuple[str, ...]:
        return (*self.keyed_by_lead(), self.commands, self.deadletter, self.receipts)


@dataclass(frozen=True)
class CodecSettings:
    """Payload format of each event topic: ``json`` or ``avro`` (schemaless binary)."""

    click: str = "json"
    open: str = "json"
    form: str = "json"
    feedback: str = "json"
    consent: str = "json"

    def for_kind(self, kind: str) -> str:
        if kind == "privacy":
            return "json"  # privacy requests come from operators' tools and the web API
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
    # Decoded rows of the most recently written leads kept in memory (about 32 KiB
    # each), so that a busy lead's row is not parsed at every batch; 0 turns it off.
    row_cache_leads: int = 2000
    # Records fetched ahead of the agent: events, and changelog rows during a recovery.
    # Below batch_max_events no batch fills up, and a few thousand make the agent wait for fetches.
    stream_buffer_records: int = 32768
    journeys_file: str = str(DEFAULT_JOURNEYS_FILE)
    timer_check_ms: int = 500  # how often the worker looks for due journey waits and deferred commands
    # A file holding the current time in epoch milliseconds, read instead of the system
    # clock; for tests and drills that move time forward. Empty: the system clock.
    clock_file: str = ""
    # "exactly_once": Kafka transactions (docs/architecture.md); "at_least_once": plain commits.
    processing_guarantee: str = "exactly_once"
    table_standby_replicas: int = 1  # other workers that keep a copy of each table partition
    session_timeout_seconds: float = 60.0  # a silent worker loses its partitions after this long
    # How often processed offsets are committed; under exactly-once, commands become
    # visible to read_committed readers at a commit.
    commit_interval_ms: int = 100


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
    # More tokens, one per operator: NAME=TOKEN pairs separated by commas (NURTURE_API_TOKENS).
    # The audit log records the name; [api] token is recorded as "api".
    tokens: str = ""


@dataclass(frozen=True)
class PrivacySettings:
    """Keys of personal data at rest, the consent every message needs, and privacy requests."""

    # The key ring: a file of NAME=BASE64 lines (`nurture privacy keygen` writes one), or
    # the same text in NURTURE_PRIVACY_KEYS. The worker refuses to start without one.
    key_file: str = ""
    keys: str = ""
    purpose: str = "marketing"  # the consent purpose every message and hand-off needs
    handoff_channel: str = "phone"  # the consent channel a sales hand-off needs
    export_dir: str = "var/exports"  # where export requests from privacy.requests are written
    audit_log: str = "var/audit.log"  # JSON lines, one per admin call of the web API


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
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    source: str = "defaults"
    # Read from the variable that [kafka] sasl_password_env names; repr leaves it out.
    kafka_sasl_password: str = field(default="", repr=False)

    @property
    def bootstrap_servers(self) -> str:
        """Broker list without the ``kafka://`` scheme, as kafka-python wants it."""
        return ",".join(
            server.strip().removeprefix("kafka://")
            for server in self.kafka.broker.replace(";", ",").split(",")
            if server.strip()
        )

    @property
    def erasures_topic(self) -> str:
        """Internal compacted topic: keyed hashes of erased leads and addresses, read by every worker."""
        return f"{self.worker.app_id}-erasures"

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
    "privacy": PrivacySettings,
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("kafka", "security_protocol"): SECURITY_PROTOCOLS,
    ("kafka", "sasl_mechanism"): SASL_MECHANISMS,
    ("codecs", "click"): CODECS,
    ("codecs", "open"): CODECS,
    ("codecs", "form"): CODECS,
    ("codecs", "feedback"): CODECS,
    ("codecs", "consent"): CODECS,
    ("privacy", "handoff_channel"): ("email", "sms", "push", "phone"),
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
    password = _kafka_password(sections["kafka"], where, environ)

    return Settings(**sections, source=source, kafka_sasl_password=password)


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
            values[section][key] = _EnvironmentText(environ[variable])
            where[(section, key)] = f"environment variable {variable}"

    for section, cls in _SECTIONS.items():
        for spec in dataclasses.fields(cls):
            variable = f"NURTURE_{section}_{spec.name}".upper()
            if variable in environ:
                values[section][spec.name] = _EnvironmentText(environ[variable])
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


_KINDS = {bool: "true or false", int: "a whole number", float: "a number"}


class _EnvironmentText(str):
    """A value from an environment variable: text that may spell a number or a truth value."""


def _convert(value: Any, default: Any, place: str) -> Any:
    """Convert a file or environment value to the type of the key's default.

    Environment values are always text. A file value must have the TOML type of
    the setting, so a quoted number in the file is an error rather than a guess.
    """
    if isinstance(value, str) and not isinstance(value, _EnvironmentText) and not isinstance(default, str):
        _convert(_EnvironmentText(value), default, place)  # raises for text that spells no such value
        raise ConfigError(f"{place}: expected {_KINDS[type(default)]}, got the text {value!r}; "
                          "write it without quotes")
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
        ("worker", "row_cache_leads"): 0,
        ("worker", "stream_buffer_records"): 1,
        ("worker", "timer_check_ms"): 10,
        ("worker", "table_standby_replicas"): 0,
        ("worker", "session_timeout_seconds"): 6,
        ("worker", "commit_interval_ms"): 10,
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
        _check_kafka_security(settings, where)


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


_TLS_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password_env")


def _check_kafka_security(kafka: KafkaSettings, where: dict[tuple[str, str], str]) -> None:
    """Reject TLS or SASL keys that the security protocol would ignore, and missing files."""
    protocol = kafka.security_protocol
    defaults = KafkaSettings()
    for key in (*_TLS_KEYS, *_SASL_KEYS):
        applies = kafka.uses_tls if key in _TLS_KEYS else kafka.uses_sasl
        if applies or getattr(kafka, key) == getattr(defaults, key):
            continue
        protocols = "SSL or SASL_SSL" if key in _TLS_KEYS else "SASL_SSL or SASL_PLAINTEXT"
        raise ConfigError(
            f"{where[('kafka', key)]}: applies only when [kafka] security_protocol is {protocols}, "
            f"but it is {protocol}; set security_protocol, or remove {key}")

    if kafka.ssl_keyfile and not kafka.ssl_certfile:
        raise ConfigError(
            f"{where[('kafka', 'ssl_keyfile')]}: a private key needs its certificate; set [kafka] ssl_certfile")
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"{where[('kafka', key)]}: file {path} not found")
    if kafka.uses_sasl and not kafka.sasl_username:
        place = where.get(("kafka", "security_protocol"), "[kafka] security_protocol")
        raise ConfigError(f"{place}: {protocol} needs a user; set [kafka] sasl_username")


def _kafka_password(
    kafka: KafkaSettings, where: dict[tuple[str, str], str], environ: Mapping[str, str]
) -> str:
    """Return the SASL password from the variable that ``sasl_password_env`` names; empty without SASL."""
    if not kafka.uses_sasl:
        return ""
    place = where.get(("kafka", "sasl_password_env"), "[kafka] sasl_password_env")
    name = kafka.sasl_password_env
    if not name or name.upper().startswith("NURTURE_"):
        raise ConfigError(
            f"{place}: {name!r} cannot hold the password; name a variable outside NURTURE_*, such as "
            "KAFKA_SASL_PASSWORD, because every NURTURE_* variable must be a setting")
    password = environ.get(name, "")
    if not password:
        raise ConfigError(
            f"{place}: the variable {name} is unset or empty; export the SASL password of "
            f"{kafka.sasl_username} in it")

    return password
