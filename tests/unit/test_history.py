from pathlib import Path

import pytest

from nurture.streams.history import HistoryError, read_events


def test_mapping_of_the_clickstream(history) -> None:
    kinds = {}
    for event in history:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    conversions = [event for event in history if event.is_conversion]

    assert len(conversions) == 470
    assert kinds["open"] > 0
    assert kinds["click"] + kinds["form"] == 31106
    assert len({event.event_id for event in history}) == len(history)
    assert [event.event_time for event in history] == sorted(event.event_time for event in history)


def test_checkout_form_carries_profile(history) -> None:
    shipping = next(event for event in history if event.attrs.get("form") == "shipping")

    assert shipping.attrs["fields"]["email"].endswith("@example.com")
    assert shipping.attrs["fields"]["first_name"]


def test_jsonl_gives_the_same_events(tmp_path: Path) -> None:
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("user_id,session_id,event,timestamp,platform,acquisition_channel\n"
                        "u1,s1,home,2024-01-01 10:00:00,desktop,email\n"
                        "u1,s1,purchase,2024-01-01 10:05:00,desktop,email\n")
    jsonl_path = tmp_path / "a.jsonl"
    jsonl_path.write_text(
        '{"user_id":"u1","session_id":"s1","event":"home","timestamp":"2024-01-01 10:00:00","platform":"desktop","acquisition_channel":"email"}\n'
        '{"user_id":"u1","session_id":"s1","event":"purchase","timestamp":"2024-01-01 10:05:00","platform":"desktop","acquisition_channel":"email"}\n'
    )

    assert read_events(csv_path) == read_events(jsonl_path)
    assert [event.kind for event in read_events(csv_path)] == ["open", "click", "form"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "user_id,event,timestamp\nu1,home,2024-01-01 10:00:00\n", "missing columns session_id"),
        ("a.csv", "user_id,session_id,event,timestamp\nu1,s1,home,yesterday\n", r"a.csv:2: invalid timestamp 'yesterday'"),
        ("a.jsonl", '{"user_id": "u1"\n', r"a.jsonl:1: invalid JSON"),
        ("a.txt", "x", "unknown format"),
        ("a.csv", "user_id,session_id,event,timestamp\n", "no events found"),
    ],
)
def test_bad_history_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(HistoryError, match=message):
        read_events(path)
