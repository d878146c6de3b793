"""The ingest agent under Faust's agent test harness (in-memory table, no broker)."""

from __future__ import annotations

import asyncio

import pytest

from factories import DAY_MS, T0, Recorder, click, form, grants, open_, privacy_parts
from nurture.agents.ingest import Outputs
from nurture.agents.state import decode_lead
from nurture.config.settings import load_settings
from nurture.streams.app import build_app
from nurture.streams.codecs import encode_event


@pytest.fixture()
def harness(runtime, tmp_path):
    settings = load_settings(environ={"NURTURE_WORKER_DATA_DIR": str(tmp_path)})
    app, holder = build_app(settings, store="memory://")
    app.finalize()
    holder.runtime = runtime
    holder.privacy.vault = privacy_parts().vault
    holder.privacy.erasures.ring = holder.privacy.vault.ring
    holder.privacy.erasures.loaded.set()
    holder.privacy.ledger = privacy_parts().ledger  # a dict: the memory store has no RocksDB to seek in
    recorder = Recorder()
    app.nurture_handler.outputs = Outputs(recorder.send_command, recorder.send_deadletter)
    agent = app.agents["nurture.ingest"]
    return app, agent, recorder


def _put(wrapper, event, codec="json", topic=None, key=None, value=None):
    """Put one record as if it came from its event topic."""
    topic = topic or f"events.{event.kind}"
    original = wrapper.to_message

    def to_message(*args, **kwargs):
        message = original(*args, **kwargs)
        message.topic = topic
        return message

    wrapper.to_message = to_message
    payload = value if value is not None else encode_event(event, codec)
    return wrapper.put(payload, key=key if key is not None else event.lead_id.encode())


def _run(harness, steps, consent=True):
    """Feed ``steps``; with ``consent`` every lead first grants marketing consent on every channel."""
    app, agent, recorder = harness
    if consent:
        leads = dict.fromkeys(step[0].lead_id for step in steps)
        steps = [(change,) for lead in leads for change in grants(lead)] + list(steps)

    async def scenario():
        async with agent.test_context() as wrapper:
            for step in steps:
                await _put(wrapper, *step[:1], **(step[1] if len(step) > 1 else {}))
            # The agent takes records in batches, so wait until it handled them all.
            for _ in range(500):
                if app.nurture_handler.records_handled >= len(steps):
                    break
                await asyncio.sleep(0.01)
            table = app.nurture_leads
            vault = app.nurture_handler.vault
            return {key: decode_lead(value, key.decode(), vault) for key, value in table.data.items()}

    return asyncio.run(scenario()), recorder


def test_form_sends_welcome_once_per_cooldown(harness) -> None:
    profile = {"email": "anna@example.com", "first_name": "Anna"}
    leads, recorder = _run(harness, [
        (form("lead-a", T0, fields=profile),),
        (form("lead-a", T0 + DAY_MS, fields=profile),),
        (form("lead-a", T0 + 4 * DAY_MS, fields=profile),),
    ])

    welcomes = [c for c in recorder.commands if c["template"] == "welcome"]
    assert [c["event_time"] for c in welcomes] == [T0, T0 + 4 * DAY_MS]
    assert welcomes[0]["personalisation"] == profile
    assert welcomes[0]["rule"] == "welcome"
    assert len(welcomes[0]["reasons"]) == 3
    assert leads[b"lead-a"]["features"]["events"] == 3


def test_open_after_welcome_sends_next_content(harness) -> None:
    leads, recorder = _run(harness, [
        (form("lead-b", T0, fields={"email": "b@example.com"}),),
        (open_("lead-b", T0 + DAY_MS, template="welcome"), {"codec": "json"}),
        (click("lead-b", T0 + DAY_MS + 60_000, "product_view", template="buying_guide"),),
    ])

    assert [c["template"] for c in recorder.commands] == ["welcome", "buying_guide", "customer_stories"]
    assert len({c["command_id"] for c in recorder.commands}) == 3


def test_duplicate_event_changes_nothing(harness) -> None:
    event = form("lead-c", T0, fields={"email": "c@example.com"})
    leads, recorder = _run(harness, [(event,), (event,)])

    assert len(recorder.commands) == 1
    assert leads[b"lead-c"]["features"]["events"] == 1


def test_bad_records_dead_lettered_stream_continues(harness) -> None:
    good = form("lead-d", T0, fields={"email": "d@example.com"})
    leads, recorder = _run(harness, [
        (good, {"value": b"{broken"}),
        (good, {"key": b"someone-else"}),
        (good,),
    ])

    assert [d["nurture.reason"] for d in recorder.dead_letters] == ["json_invalid", "key_mismatch"]
    assert recorder.dead_letters[0]["nurture.source.topic"] == "events.form"
    assert recorder.dead_letters[0]["nurture.source.offset"] == "4"  # after the lead's four consent grants
    assert recorder.dead_letters[0]["value"] == "{broken"
    assert len(recorder.commands) == 1


def test_email_without_address_is_held(harness) -> None:
    leads, recorder = _run(harness, [(form("lead-e", T0, fields={}),)])

    assert recorder.commands == []
    assert leads[b"lead-e"]["sends"] == {}
