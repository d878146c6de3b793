"""TLS and SASL: the pipeline against a broker of its own with a TLS and a SASL_SSL listener.

The broker (scripts/kafka.sh with KAFKA_SSL_PORT and KAFKA_SASL_SSL_PORT)
requires a client certificate on its TLS listener and a SCRAM or PLAIN login
on its SASL_SSL listener, with certificates that the module makes itself.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from kafka import KafkaProducer

from certificates import Certificates, make_certificates
from conftest import Worker, commands_for, read_until, send_event
from factories import BOXES, T0, form
from nurture.config.settings import Settings
from nurture.streams.kafka_clients import BrokerConnectionError, connect
from nurture.streams.topics import ensure_topics

PROJECT = Path(__file__).resolve().parents[2]
KAFKA_SH = PROJECT / "scripts" / "kafka.sh"
USER = "nurture"
PASSWORD = "scram-test-secret-7"


@dataclasses.dataclass(frozen=True)
class SecureBroker:
    tls: str  # host:port of the listener that requires a client certificate
    sasl_ssl: str  # host:port of the listener that requires a SASL login
    certificates: Certificates


@pytest.fixture(scope="module")
def secure_broker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    # `broker` is not used: it skips the module outside `make test`, as it skips the other integration tests.
    directory = tmp_path_factory.mktemp("secure-broker")
    certificates = make_certificates(directory / "certs")
    env = {**os.environ, "KAFKA_DATA": str(directory / "kafka"), "KAFKA_PORT": "auto",
           "KAFKA_SSL_PORT": "auto", "KAFKA_SASL_SSL_PORT": "auto",
           "KAFKA_SSL_KEYSTORE": str(certificates.server), "KAFKA_SSL_CLIENT_CA": str(certificates.ca),
           "KAFKA_SCRAM_USERS": f"{USER}={PASSWORD}", "KAFKA_HEAP_OPTS": "-Xmx256m"}
    started = subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        values = dict(line.split("=", 1) for line in (directory / "kafka" / "broker.env").read_text().split())
        yield SecureBroker(values["KAFKA_SSL_BOOTSTRAP"], values["KAFKA_SASL_SSL_BOOTSTRAP"], certificates)
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "stop"], env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=120)


def sasl_worker(secure: SecureBroker, model_dir: Path, directory: Path, mechanism: str,
                password: str = PASSWORD) -> Worker:
    """Return a worker, not started, with its own topics, that logs in over SASL_SSL."""
    env = {"NURTURE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "NURTURE_KAFKA_SSL_CAFILE": str(secure.certificates.ca),
           "NURTURE_KAFKA_SASL_MECHANISM": mechanism, "NURTURE_KAFKA_SASL_USERNAME": USER,
           "KAFKA_SASL_PASSWORD": password}
    return Worker(directory, f"kafka://{secure.sasl_ssl}", model_dir, env, own_topics=True)


def over_tls(settings: Settings, secure: SecureBroker, client_certificate: bool = True) -> Settings:
    """Return ``settings`` pointed at the TLS listener, with the client certificate or without."""
    certificates = secure.certificates
    kafka = dataclasses.replace(
        settings.kafka, broker=f"kafka://{secure.tls}", security_protocol="SSL",
        ssl_certfile=str(certificates.client_cert) if client_certificate else "",
        ssl_keyfile=str(certificates.client_key) if client_certificate else "")
    return dataclasses.replace(settings, kafka=kafka, kafka_sasl_password="")


def test_pipeline_runs_over_scram_and_mutual_tls(secure_broker: SecureBroker, model_dir: Path,
                                                 tmp_path: Path) -> None:
    worker = sasl_worker(secure_broker, model_dir, tmp_path, "SCRAM-SHA-512")
    worker.create_topics()  # `nurture topics create` over SASL_SSL
    worker.start()
    lead = f"secure-{uuid.uuid4().hex[:10]}"
    try:
        events = over_tls(worker.settings, secure_broker)
        producer = connect(events, KafkaProducer, acks="all")
        try:
            send_event(producer, events, form(lead, T0, fields={"email": f"{lead}@example.com"}, consents=BOXES))
        finally:
            producer.close()
        reader = dataclasses.replace(worker.settings, kafka=dataclasses.replace(
            worker.settings.kafka, sasl_mechanism="SCRAM-SHA-256"))
        records = read_until(reader, reader.topics.commands,
                             lambda rs: len(commands_for(rs, {lead})) >= 1, worker=worker)
    finally:
        worker.stop()

    log = worker.log_path.read_text(errors="replace")
    assert [command["template"] for command in commands_for(records, {lead})] == ["welcome"]
    assert '"security_protocol": "SASL_SSL"' in log
    assert PASSWORD not in log


def test_plain_login_creates_topics(secure_broker: SecureBroker, model_dir: Path, tmp_path: Path) -> None:
    settings = sasl_worker(secure_broker, model_dir, tmp_path, "PLAIN").settings

    statuses = ensure_topics(settings)

    assert all(status.partitions == settings.kafka.partitions for status in statuses)


def test_wrong_scram_password_names_broker_and_setting(secure_broker: SecureBroker, model_dir: Path,
                                                        tmp_path: Path) -> None:
    wrong = "not-the-password"
    env = {**sasl_worker(secure_broker, model_dir, tmp_path, "SCRAM-SHA-512", wrong).env,
           "NURTURE_KAFKA_ADMIN_TIMEOUT_SECONDS": "3", "NURTURE_LOG_FORMAT": "console"}

    result = subprocess.run([str(Path(sys.executable).with_name("nurture")), "topics", "create"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    # The broker's refusal and its close of the connection may reach the client in one read. kafka-python
    # then reports only the closed connection, so either message may come, and both name the broker and login.
    assert f"the Kafka broker at {secure_broker.sasl_ssl} " in result.stderr
    assert f" SCRAM-SHA-512 login of user '{USER}'" in result.stderr
    assert "KAFKA_SASL_PASSWORD (the variable that [kafka] sasl_password_env names)" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_tls_listener_refuses_client_without_certificate(secure_broker: SecureBroker, model_dir: Path,
                                                          tmp_path: Path) -> None:
    settings = sasl_worker(secure_broker, model_dir, tmp_path, "SCRAM-SHA-512").settings
    anonymous = over_tls(settings, secure_broker, client_certificate=False)
    anonymous = dataclasses.replace(anonymous, kafka=dataclasses.replace(anonymous.kafka, admin_timeout_seconds=3))

    with pytest.raises(BrokerConnectionError, match=f"TLS handshake with the Kafka broker at {secure_broker.tls} "
                                                    "failed: .*ssl_certfile and ssl_keyfile"):
        ensure_topics(anonymous)
