"""Connection options of every Kafka client, built once from the ``[kafka]`` settings.

kafka-python clients (topics, replay, reports, lead lookup, delivery) take
``client_options``; the Faust app takes ``broker_credentials``. Both share one
TLS context per call and the SASL login of the settings.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, SaslAuthenticationFailedError

from nurture.config.errors import ConfigError, NurtureError
from nurture.config.settings import KafkaSettings, Settings

Client = TypeVar("Client")


class BrokerConnectionError(NurtureError):
    """A client could not connect to the broker: unreachable, or TLS or SASL refused."""


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """Return the TLS context of the settings, or None when the protocol has no TLS.

    Raises ConfigError naming the key whose file cannot be loaded.
    """
    if not kafka.uses_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=kafka.ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[kafka] ssl_cafile: cannot load CA certificates from {kafka.ssl_cafile}: {exc}") from exc
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile:
        try:
            # An empty password makes an encrypted key fail here; without one OpenSSL would prompt.
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile or None, password="")
        except (OSError, ssl.SSLError) as exc:
            files = " and ".join(path for path in (kafka.ssl_certfile, kafka.ssl_keyfile) if path)
            raise ConfigError(
                f"[kafka] ssl_certfile and ssl_keyfile: cannot load a certificate and its unencrypted "
                f"private key from {files}: {exc}") from exc

    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Return the bootstrap servers, TLS and SASL options of a kafka-python client."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.uses_sasl:
        # kafka-python takes the SCRAM login in its sasl_plain_* options too.
        options.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)

    return options


def broker_credentials(settings: Settings) -> Any:
    """Return Faust's ``broker_credentials`` for the settings, or None for PLAINTEXT."""
    import faust

    kafka = settings.kafka
    context = ssl_context(kafka)
    if kafka.uses_sasl:
        return faust.SASLCredentials(username=kafka.sasl_username, password=settings.kafka_sasl_password,
                                     ssl_context=context, mechanism=kafka.sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)

    return None


def connect(settings: Settings, client: Callable[..., Client], **options: Any) -> Client:
    """Create a kafka-python ``client`` (KafkaConsumer, KafkaProducer, KafkaAdminClient) for the settings.

    ``options`` come on top of ``client_options``. Raises BrokerConnectionError
    naming the broker and, when the broker refused TLS or SASL, the settings to
    check. kafka-python logs the cause of each failed attempt and raises only
    a timeout, so its log lines are kept back while the client connects and the
    cause is taken from them.
    """
    with _kafka_failures() as failures:
        try:
            return client(**client_options(settings), **options)
        except KafkaError as exc:
            raise BrokerConnectionError(describe_failure(settings, failures.cause() or exc)) from exc


def describe_failure(settings: Settings, cause: BaseException) -> str:
    """Say why a client could not connect, and which setting or action fixes it."""
    kafka = settings.kafka
    broker = settings.bootstrap_servers
    login = f"{kafka.sasl_mechanism} login of user {kafka.sasl_username!r}"
    login_settings = (f"check [kafka] sasl_username, sasl_mechanism and the password in {kafka.sasl_password_env} "
                      "(the variable that [kafka] sasl_password_env names)")
    if isinstance(cause, SaslAuthenticationFailedError):
        return f"the Kafka broker at {broker} refused the {login}: {cause}; {login_settings}"
    if kafka.uses_sasl and _dropped_after_connecting(cause):
        # A broker sends its error response to a rejected login, then closes the
        # connection. When both arrive in one read, kafka-python discards the
        # response and reports only the closed socket.
        return (f"the Kafka broker at {broker} closed the connection of the {login}, as it does when it refuses "
                f"a login; {login_settings}, and security_protocol")
    tls_error = _tls_error(cause)
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of the Kafka broker at {broker} is not trusted: "
                f"{tls_error.verify_message}; check [kafka] ssl_cafile and ssl_check_hostname")
    if tls_error is not None:
        return (f"the TLS handshake with the Kafka broker at {broker} failed: {tls_error.reason or tls_error}; "
                "check [kafka] ssl_certfile and ssl_keyfile if the broker requires a client certificate, "
                "and security_protocol")
    return (f"cannot reach the Kafka broker at {broker} with security_protocol {kafka.security_protocol}: "
            f"{cause}; start it with `make kafka`, or check [kafka] broker (NURTURE_BROKER) and "
            "security_protocol")


def _dropped_after_connecting(error: BaseException) -> bool:
    """Return True when the broker closed a connection it had accepted, rather than refusing it."""
    # NOTE: kafka-python 3 has no error type of its own for this, only the message of kafka/net/transport.py.
    return isinstance(error, KafkaConnectionError) and "socket disconnected" in str(error)


def _tls_error(error: BaseException) -> ssl.SSLError | None:
    """Find the ssl.SSLError in ``error``, its chain or its arguments; kafka-python wraps it."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        pending.extend(item for item in (current.__cause__, current.__context__, *current.args)
                       if isinstance(item, BaseException))
    return None


class _Failures(logging.Handler):
    """Keeps the exceptions that kafka-python logs while a client connects."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        arguments = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(item for item in arguments if isinstance(item, BaseException))

    def cause(self) -> BaseException | None:
        """Return the most telling failure: a refused login, a TLS error, else the last attempt's."""
        for error in self.errors:
            if isinstance(error, SaslAuthenticationFailedError):
                return error
        for error in self.errors:
            if _tls_error(error) is not None:
                return error
        # The last line of a failed bootstrap reports only its timeout.
        attempts = [error for error in self.errors if not isinstance(error, KafkaTimeoutError)]
        return attempts[-1] if attempts else None


@contextmanager
def _kafka_failures() -> Iterator[_Failures]:
    """Collect kafka-python's warnings within the block, and keep them out of the output.

    The caller reports a failure once; kafka-python would log each attempt. At
    log level debug its lines still go out.
    """
    kafka_log = logging.getLogger("kafka")
    failures = _Failures()
    level, propagate = kafka_log.level, kafka_log.propagate
    kafka_log.addHandler(failures)
    if kafka_log.getEffectiveLevel() > logging.DEBUG:
        kafka_log.setLevel(logging.WARNING)
        kafka_log.propagate = False
    try:
        yield failures
    finally:
        kafka_log.removeHandler(failures)
        kafka_log.setLevel(level)
        kafka_log.propagate = propagate
