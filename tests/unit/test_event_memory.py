"""The lead row remembers its last event ids as digests, and reads rows that kept the ids."""

from __future__ import annotations

import binascii

import orjson

from nurture.agents.state import EVENT_DIGEST_BYTES, _event_digest, has_seen, new_lead, remember_event


def test_repeat_event_rejected() -> None:
    lead = new_lead("lead-a")

    assert remember_event(lead, "evt-1", 64)
    assert not remember_event(lead, "evt-1", 64)
    assert has_seen(lead, "evt-1")


def test_new_event_accepted_when_memory_full() -> None:
    lead = new_lead("lead-a")
    for number in range(64):
        remember_event(lead, f"evt-{number}", 64)

    assert not has_seen(lead, "evt-other")
    assert remember_event(lead, "evt-other", 64)


def test_oldest_forgotten_past_limit() -> None:
    lead = new_lead("lead-a")
    for event_id in ("evt-1", "evt-2", "evt-3", "evt-4"):
        remember_event(lead, event_id, 3)

    assert not has_seen(lead, "evt-1")
    assert [has_seen(lead, event_id) for event_id in ("evt-2", "evt-3", "evt-4")] == [True, True, True]
    assert len(binascii.a2b_base64(lead["seen"])) == 3 * EVENT_DIGEST_BYTES


def test_match_across_two_digests_ignored() -> None:
    """The bytes of a digest can occur across the end of one stored digest and the start of the next."""
    expected = _event_digest("evt-expected")
    straddling = b"\0" * 4 + expected + b"\0" * 4  # two stored digests with ``expected`` across them
    lead = {"seen": binascii.b2a_base64(straddling, newline=False).decode("ascii")}

    assert not has_seen(lead, "evt-expected")
    assert remember_event(lead, "evt-expected", 64)
    assert has_seen(lead, "evt-expected")


def test_row_with_id_list_read_and_converted() -> None:
    old = {"seen": ["evt-1", "evt-2"]}

    assert has_seen(old, "evt-1")
    assert not remember_event(old, "evt-2", 64)
    assert remember_event(old, "evt-3", 64)
    assert isinstance(old["seen"], str)
    assert [has_seen(old, event_id) for event_id in ("evt-1", "evt-2", "evt-3")] == [True, True, True]


def test_digests_smaller_than_ids() -> None:
    ids = [f"{number:032x}-t0" for number in range(64)]
    lead = new_lead("lead-a")
    for event_id in ids:
        remember_event(lead, event_id, 64)

    assert len(orjson.dumps(lead["seen"])) * 2 < len(orjson.dumps(ids))
