"""Connection options built from the [kafka] settings, and what a failed connection says."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from cryptography.hazmat.primitives import serialization
from faust.types.auth import AuthProtocol, SASLMechanism
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

from certificates import Certificates, make_certificates
from nurture.config.errors import ConfigError
from nurture.config.settings import KafkaSettings, Settings
from nurture.streams.kafka_clients import (
    BrokerConnectionError,
    _Failures,
    broker_credentials,
    client_options,
    connect,
    describe_failure,
)

PASSWORD = "pw-in-the-environment"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def secured(**kafka: Any) -> Settings:
    return Settings(kafka=KafkaSettings(broker="kafka://broker-1:9093", **kafka), kafka_sasl_password=PASSWORD)


def test_plaintext_options_name_only_the_brokers() -> None:
    assert client_options(Settings()) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert broker_credentials(Settings()) is None


def test_sasl_ssl_options_carry_login_and_verifying_context(certificates: Certificates) -> None:
    settings = secured(security_protocol="SASL_SSL", ssl_cafile=str(certificates.ca),
                       sasl_mechanism="SCRAM-SHA-256", sasl_username="svc")

    options = client_options(settings)

    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "broker-1:9093", "security_protocol": "SASL_SSL",
                       "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "svc",
                       "sasl_plain_password": PASSWORD}
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "Nurture test CA"),),)]


def test_hostname_check_can_be_turned_off(certificates: Certificates) -> None:
    settings = secured(security_protocol="SSL", ssl_cafile=str(certificates.ca), ssl_check_hostname=False)

    context = client_options(settings)["ssl_context"]

    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_client_certificate_not_matching_its_key_is_rejected_as_settings_error(certificates: Certificates) -> None:
    settings = secured(security_protocol="SSL", ssl_certfile=str(certificates.ca),
                       ssl_keyfile=str(certificates.client_key))

    with pytest.raises(ConfigError, match=r"\[kafka\] ssl_certfile and ssl_keyfile: cannot load .*ca\.pem"):
        client_options(settings)


def test_encrypted_client_key_is_rejected_without_prompting(certificates: Certificates, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(certificates.client_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"key-password")))
    settings = secured(security_protocol="SSL", ssl_certfile=str(certificates.client_cert),
                       ssl_keyfile=str(encrypted))

    with pytest.raises(ConfigError, match="cannot load a certificate and its unencrypted private key"):
        client_options(settings)


def test_cafile_without_certificates_is_a_settings_error(certificates: Certificates) -> None:
    settings = secured(security_protocol="SSL", ssl_cafile=str(certificates.client_key))

    with pytest.raises(ConfigError, match=r"\[kafka\] ssl_cafile: cannot load CA certificates from .*client\.key"):
        broker_credentials(settings)


def test_faust_gets_sasl_credentials_over_tls(certificates: Certificates) -> None:
    settings = secured(security_protocol="SASL_SSL", ssl_cafile=str(certificates.ca), sasl_username="svc")

    credentials = broker_credentials(settings)

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("svc", PASSWORD)
    assert PASSWORD not in repr(credentials)


def test_faust_gets_sasl_credentials_without_tls() -> None:
    credentials = broker_credentials(secured(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                             sasl_username="svc"))

    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.ssl_context is None
    assert credentials.mechanism is SASLMechanism.PLAIN


def test_faust_gets_ssl_credentials_for_mutual_tls(certificates: Certificates) -> None:
    settings = secured(security_protocol="SSL", ssl_cafile=str(certificates.ca),
                       ssl_certfile=str(certificates.client_cert), ssl_keyfile=str(certificates.client_key))

    credentials = broker_credentials(settings)

    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL


def test_refused_login_names_user_mechanism_and_password_variable() -> None:
    settings = secured(security_protocol="SASL_SSL", sasl_username="svc", sasl_password_env="KAFKA_PW")
    refused = SaslAuthenticationFailedError("invalid credentials")

    message = describe_failure(settings, refused)

    assert message.startswith("the Kafka broker at broker-1:9093 refused the SCRAM-SHA-512 login of user 'svc'")
    assert "password in KAFKA_PW (the variable that [kafka] sasl_password_env names)" in message
    assert PASSWORD not in message


def test_dropped_login_names_login_settings() -> None:
    settings = secured(security_protocol="SASL_SSL", sasl_username="svc", sasl_password_env="KAFKA_PW")

    message = describe_failure(settings, KafkaConnectionError("socket disconnected"))

    assert message.startswith("the Kafka broker at broker-1:9093 closed the connection of the SCRAM-SHA-512 login "
                              "of user 'svc'")
    assert "password in KAFKA_PW (the variable that [kafka] sasl_password_env names)" in message
    assert message.endswith("and security_protocol")


@pytest.mark.parametrize("security_protocol, error", [("PLAINTEXT", "socket disconnected"),
                                                      ("SASL_SSL", "111 ECONNREFUSED")])
def test_connection_without_login_is_unreachable(security_protocol: str, error: str) -> None:
    message = describe_failure(secured(security_protocol=security_protocol), KafkaConnectionError(error))

    assert message.startswith(f"cannot reach the Kafka broker at broker-1:9093 with security_protocol "
                              f"{security_protocol}: KafkaConnectionError: {error}")


def test_untrusted_broker_certificate_names_cafile() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as exc:
            exc.verify_message = "self-signed certificate in certificate chain"
            raise KafkaConnectionError(f"Handshake failed: {exc}")
    except KafkaConnectionError as wrapped:
        message = describe_failure(secured(security_protocol="SSL"), wrapped)

    assert message == ("the TLS certificate of the Kafka broker at broker-1:9093 is not trusted: self-signed "
                       "certificate in certificate chain; check [kafka] ssl_cafile and ssl_check_hostname")


def test_refused_handshake_names_client_certificate() -> None:
    alert = ssl.SSLError(1, "sslv3 alert bad certificate")
    alert.reason = "SSLV3_ALERT_BAD_CERTIFICATE"

    message = describe_failure(secured(security_protocol="SSL"), KafkaConnectionError(alert))

    assert "TLS handshake with the Kafka broker at broker-1:9093 failed: SSLV3_ALERT_BAD_CERTIFICATE" in message
    assert "[kafka] ssl_certfile and ssl_keyfile" in message


def test_failures_prefer_refused_login_over_later_disconnects() -> None:
    failures = _Failures()
    refused = SaslAuthenticationFailedError("invalid credentials")
    for error in (refused, KafkaConnectionError("socket disconnected"), KafkaTimeoutError("Unable to bootstrap")):
        failures.handle(logging.LogRecord("kafka.net.manager", logging.WARNING, __file__, 1,
                                          "Bootstrap connection to %s failed: %s", ("bootstrap-0", error), None))

    assert failures.cause() is refused


def test_failures_skip_the_final_timeout() -> None:
    failures = _Failures()
    refused = KafkaConnectionError("111 ECONNREFUSED")
    for error in (refused, KafkaTimeoutError("Unable to bootstrap")):
        failures.handle(logging.LogRecord("kafka.net.manager", logging.WARNING, __file__, 1, "%s", (error,), None))

    assert failures.cause() is refused


def test_unreachable_broker_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka=KafkaSettings(broker="kafka://127.0.0.1:9"))

    with caplog.at_level(logging.INFO), pytest.raises(BrokerConnectionError) as raised:
        connect(settings, KafkaConsumer, group_id=None, bootstrap_timeout_ms=300)

    assert str(raised.value).startswith("cannot reach the Kafka broker at 127.0.0.1:9 with security_protocol "
                                        "PLAINTEXT: ")
    assert "`make kafka`" in str(raised.value)
    assert [record for record in caplog.records if record.name.startswith("kafka")] == []
    assert logging.getLogger("kafka").propagate
