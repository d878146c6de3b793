"""The key ring and the sealing of personal fields."""

from __future__ import annotations

import orjson
import pytest

from factories import TEST_KEYS, consenting
from nurture.agents.privacy.keys import keygen_text, parse_keys
from nurture.agents.privacy.vault import Vault, VaultError
from nurture.agents.state import decode_lead, encode_lead
from nurture.config.errors import ConfigError

K = "A" * 43 + "="  # 32 zero bytes


def test_keygen_text_parses_and_rotation_keeps_old_keys() -> None:
    first = parse_keys(keygen_text(), "new")
    rotated_text = keygen_text(keygen_text())
    rotated = parse_keys(rotated_text, "rotated")

    assert len(first.data_keys) == 1
    assert first.current in first.data_keys
    assert len(rotated.data_keys) == 2
    assert rotated.current in rotated.data_keys


@pytest.mark.parametrize("text, message", [
    ("hash=" + K + "\nk=" + K, "no current=NAME entry"),
    ("current=k\nk=" + K, "no hash=BASE64 entry"),
    ("current=x\nhash=" + K + "\nk=" + K, "current=x names no data key"),
    ("current=k\nhash=" + K + "\nk=not base64!", "key 'k' is not valid base64"),
    ("current=k\nhash=" + K + "\nk=" + K + "\nk=" + K, "line 4: key 'k' is given twice"),
    ("current=k\nhash=" + K + "\njust text", "line 3: expected NAME=BASE64"),
])
def test_bad_key_ring_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_keys(text, "keys.txt")


def test_ring_on_one_line_and_repr_hides_keys() -> None:
    ring = parse_keys(TEST_KEYS.replace("\n", ","), "env")
    assert ring.current == "t1"
    assert "AAEC" not in repr(ring)
    assert "t1" in repr(ring)


def _lead_with_profile() -> dict:
    lead = consenting("lead-1")
    lead["profile"] = {"email": "zofia@example.com", "first_name": "Zofia", "time_zone": "Europe/Warsaw"}
    return lead


def test_row_holds_no_personal_field_in_clear() -> None:
    vault = Vault(parse_keys(TEST_KEYS, "test"))
    row = encode_lead(_lead_with_profile(), vault)

    assert b"zofia@example.com" not in row
    assert b"Zofia" not in row
    assert orjson.loads(row)["profile"] == {"time_zone": "Europe/Warsaw"}
    assert decode_lead(row, "lead-1", vault)["profile"]["email"] == "zofia@example.com"
    assert "email" not in decode_lead(row, "lead-1", None)["profile"]


def test_sealed_profile_bound_to_its_lead_and_key() -> None:
    vault = Vault(parse_keys(TEST_KEYS, "test"))
    row = encode_lead(_lead_with_profile(), vault)
    copied = row.replace(b'"lead_id":"lead-1"', b'"lead_id":"lead-2"')

    with pytest.raises(VaultError, match="does not open"):
        decode_lead(copied, "lead-2", vault)
    other = Vault(parse_keys(keygen_text(), "other"))
    with pytest.raises(VaultError, match="which the key ring lacks"):
        decode_lead(row, "lead-1", other)


def test_rotation_rewraps_on_next_write() -> None:
    old_text = TEST_KEYS
    vault = Vault(parse_keys(old_text, "old"))
    row = encode_lead(_lead_with_profile(), vault)
    new_vault = Vault(parse_keys(keygen_text(old_text), "rotated"))

    lead = decode_lead(row, "lead-1", new_vault)
    rewritten = orjson.loads(encode_lead(lead, new_vault))

    assert orjson.loads(row)["sealed"]["kid"] == "t1"
    assert rewritten["sealed"]["kid"] == new_vault.ring.current != "t1"
    assert decode_lead(orjson.dumps(rewritten), "lead-1", new_vault)["profile"]["first_name"] == "Zofia"


def test_personal_data_without_vault_is_refused() -> None:
    with pytest.raises(VaultError, match="no key ring"):
        encode_lead(_lead_with_profile(), None)


def test_last_envelope_opens_from_memory_and_no_other() -> None:
    vault = Vault(parse_keys(TEST_KEYS, "test"))
    row = orjson.loads(encode_lead(_lead_with_profile(), vault))
    vault._wrappers = {}  # any decryption from here on fails

    fields, _ = vault.open("lead-1", row["sealed"])
    fields["email"] = "changed@example.com"
    again, _ = vault.open("lead-1", dict(row["sealed"]))
    changed = {**row["sealed"], "data": row["sealed"]["data"][:-4] + "AAA="}

    assert again["email"] == "zofia@example.com"
    with pytest.raises(VaultError, match="which the key ring lacks"):
        vault.open("lead-1", changed)
    with pytest.raises(VaultError, match="which the key ring lacks"):
        vault.open("lead-2", row["sealed"])
