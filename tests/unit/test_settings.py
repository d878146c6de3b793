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
