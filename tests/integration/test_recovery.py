"""A worker that loses its local RocksDB files rebuilds the lead table from the changelog."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from conftest import Worker, commands_for, read_until, send_event
from factories import BOXES, DAY_MS, HOUR_MS, T0, form, open_
from nurture.streams.report import wait_until_idle


def test_state_rebuilt_from_changelog(broker, model_dir: Path, producer, tmp_path: Path) -> None:
    own = Worker(tmp_path, broker, model_dir, {}, own_topics=True)
    own.create_topics()
    settings = own.settings
    lead = f"recover-{uuid.uuid4().hex[:10]}"
    profile = {"email": f"{lead}@example.com"}
    signup = form(lead, T0, fields=profile, consents=BOXES)

    own.start()
    try:
        send_event(producer, settings, signup)
        read_until(settings, settings.topics.commands,
                   lambda rs: len(commands_for(rs, {lead})) == 1, worker=own)
        assert wait_until_idle(settings, timeout_seconds=60, quiet_seconds=1.0).idle
    finally:
        own.stop()

    shutil.rmtree(tmp_path / "data")
    own.start()
    try:
        send_event(producer, settings, signup)  # already seen before the restart
        send_event(producer, settings, form(lead, T0 + HOUR_MS, fields=profile))  # within cooldown
        send_event(producer, settings, open_(lead, T0 + DAY_MS, template="welcome"))
        records = read_until(settings, settings.topics.commands,
                             lambda rs: len(commands_for(rs, {lead})) >= 2, worker=own)
        assert wait_until_idle(settings, timeout_seconds=60, quiet_seconds=1.0).idle
        records = read_until(settings, settings.topics.commands, lambda rs: len(rs) >= len(records))
    finally:
        own.stop()

    commands = commands_for(records, {lead})
    assert [command["template"] for command in commands] == ["welcome", "buying_guide"]
    assert "Highwater" in own.log_path.read_text()
