from pathlib import Path

import pytest

from nurture.config.errors import ConfigError
from nurture.config.settings import load_settings


def test_defaults_without_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})

    assert settings.kafka.partitions == 6
    assert settings.topics.event_topics() == ("events.click", "events.open", "events.form")
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.source == "defaults"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "nurture.toml"
    path.write_text('[kafka]\npartitions = 3\nbroker = "kafka://a:1"\n[codecs]\nform = "avro"\n')
    settings = load_settings(path, environ={"NURTURE_KAFKA_PARTITIONS": "12"})

    assert settings.kafka.partitions == 12
    assert settings.kafka.broker == "kafka://a:1"
    assert settings.codecs.for_kind("form") == "avro"


def test_broker_short_variable_and_list() -> None:
    settings = load_settings(environ={"NURTURE_BROKER": "kafka://h1:9092;kafka://h2:9093"})

    assert settings.bootstrap_servers == "h1:9092,h2:9093"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[kafka]\npartitions = 'six'\n", r"nurture.toml: \[kafka\] partitions: expected a whole number"),
        ("[kafka]\npartitions = '6'\n", r"partitions: expected a whole number, got the text '6'; write it without"),
        ("[worker]\nmodel_check_seconds = '10'\n", r"model_check_seconds: expected a number, got the text '10'"),
        ("[kafka]\nssl_check_hostname = 'true'\n", r"ssl_check_hostname: expected true or false, got the text 'true'"),
        ("[kafka]\npartitions = 0\n", r"\[kafka\] partitions: must be at least 1"),
        ("[codecs]\nclick = 'xml'\n", r"\[codecs\] click: 'xml' is not one of json, avro"),
        ("[kafak]\n", r"unknown section \[kafak\]"),
        ("[worker]\nweb_prot = 1\n", r"\[worker\] web_prot: unknown key"),
        ("[kafka\n", r"nurture.toml: invalid TOML"),
    ],
)
def test_bad_file_names_file_and_place(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "nurture.toml"
    path.write_text(text)

    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="environment variable NURTURE_WORKER_WEB_PORT: expected a whole number"):
        load_settings(environ={"NURTURE_WORKER_WEB_PORT": "http"})


def test_missing_named_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(environ={"NURTURE_CONFIG": str(tmp_path / "absent.toml")})


@pytest.mark.parametrize("broker", ["http://127.0.0.1:9092", "kafka://127.0.0.1", "kafka://:9092", " ; "])
def test_bad_broker_address(broker: str) -> None:
    with pytest.raises(ConfigError, match="NURTURE_BROKER: .*(not a broker address|empty)"):
        load_settings(environ={"NURTURE_BROKER": broker})


def test_misspelled_variable_is_named_with_suggestion() -> None:
    with pytest.raises(ConfigError, match="NURTURE_KAFKA_PARTITONS is not a Nurture setting; did you mean NURTURE_KAFKA_PARTITIONS"):
        load_settings(environ={"NURTURE_KAFKA_PARTITONS": "3"})


def test_kafka_connects_in_plaintext_without_password_by_default() -> None:
    settings = load_settings(environ={})

    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_password == ""


def test_sasl_password_comes_from_the_named_variable(tmp_path: Path) -> None:
    path = tmp_path / "nurture.toml"
    path.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_username = "svc"\nsasl_password_env = "KPW"\n')

    settings = load_settings(path, environ={"KPW": "s3cret"})

    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_password == "s3cret"
    assert "s3cret" not in repr(settings)


def test_tls_files_are_read_from_file_and_environment(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("")
    path = tmp_path / "nurture.toml"
    path.write_text(f'[kafka]\nsecurity_protocol = "SSL"\nssl_cafile = "{tmp_path / "ca.pem"}"\n')

    settings = load_settings(path, environ={"NURTURE_KAFKA_SSL_CERTFILE": str(tmp_path / "client.pem"),
                                            "NURTURE_KAFKA_SSL_KEYFILE": str(tmp_path / "client.key"),
                                            "NURTURE_KAFKA_SSL_CHECK_HOSTNAME": "false"})

    assert settings.kafka.uses_tls and not settings.kafka.uses_sasl
    assert settings.kafka.ssl_certfile == str(tmp_path / "client.pem")
    assert settings.kafka.ssl_check_hostname is False


def test_plaintext_accepts_tls_and_sasl_keys_set_to_their_defaults() -> None:
    settings = load_settings(environ={"NURTURE_KAFKA_SSL_CAFILE": "", "NURTURE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})

    assert settings.kafka.security_protocol == "PLAINTEXT"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ('security_protocol = "TLS"', {},
         r"nurture.toml: \[kafka\] security_protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ('security_protocol = "SASL_SSL"\nsasl_username = "svc"\nsasl_mechanism = "GSSAPI"', {"KAFKA_SASL_PASSWORD": "x"},
         r"\[kafka\] sasl_mechanism: 'GSSAPI' is not one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN"),
        ('ssl_cafile = "ca.pem"', {},
         r"nurture.toml: \[kafka\] ssl_cafile: applies only when \[kafka\] security_protocol is SSL or SASL_SSL, "
         "but it is PLAINTEXT"),
        ('security_protocol = "SSL"\nsasl_username = "svc"', {},
         r"nurture.toml: \[kafka\] sasl_username: applies only when \[kafka\] security_protocol is SASL_SSL or "
         "SASL_PLAINTEXT, but it is SSL"),
        ('security_protocol = "SASL_PLAINTEXT"\nssl_check_hostname = false', {},
         r"\[kafka\] ssl_check_hostname: applies only when .* is SSL or SASL_SSL, but it is SASL_PLAINTEXT"),
        ('security_protocol = "SASL_SSL"', {"KAFKA_SASL_PASSWORD": "x"},
         r"nurture.toml: \[kafka\] security_protocol: SASL_SSL needs a user; set \[kafka\] sasl_username"),
        ('security_protocol = "SASL_SSL"\nsasl_username = "svc"', {},
         r"\[kafka\] sasl_password_env: the variable KAFKA_SASL_PASSWORD is unset or empty; export the SASL "
         "password of svc in it"),
        ('security_protocol = "SASL_SSL"\nsasl_username = "svc"\nsasl_password_env = "NURTURE_KAFKA_PW"', {},
         r"nurture.toml: \[kafka\] sasl_password_env: 'NURTURE_KAFKA_PW' cannot hold the password; name a "
         "variable outside NURTURE_"),
        ('security_protocol = "SSL"\nssl_cafile = "/no/such/ca.pem"', {},
         r"nurture.toml: \[kafka\] ssl_cafile: file /no/such/ca.pem not found"),
        ('security_protocol = "SSL"\nssl_keyfile = "/no/such/client.key"', {},
         r"nurture.toml: \[kafka\] ssl_keyfile: a private key needs its certificate; set \[kafka\] ssl_certfile"),
    ],
)
def test_bad_kafka_security_names_file_and_key(tmp_path: Path, text: str, environ: dict[str, str],
                                               message: str) -> None:
    path = tmp_path / "nurture.toml"
    path.write_text(f"[kafka]\n{text}\n")

    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ=environ)


def test_tls_key_in_environment_without_tls_is_rejected_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment variable NURTURE_KAFKA_SSL_CERTFILE: applies only when"):
        load_settings(environ={"NURTURE_KAFKA_SSL_CERTFILE": "client.pem"})
