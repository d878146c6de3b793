"""Topic creation on the real broker, changelogs included."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from nurture.config.settings import load_settings
from nurture.streams.kafka_clients import connect
from nurture.streams.topics import changelog_topics, ensure_topics


def test_creates_compacted_changelogs(broker):
    settings = load_settings(environ={"NURTURE_BROKER": broker,
                                      "NURTURE_WORKER_APP_ID": f"topics-{uuid.uuid4().hex[:8]}"})
    statuses = {status.name: status for status in ensure_topics(settings)}
    changelogs = changelog_topics(settings)
    assert changelogs == (f"{settings.worker.app_id}-leads-changelog", f"{settings.worker.app_id}-timers-changelog",
                          f"{settings.worker.app_id}-ledger-changelog")
    for name in changelogs:
        assert statuses[name].created
        assert statuses[name].partitions == settings.kafka.partitions
    admin = connect(settings, KafkaAdminClient)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in changelogs])
        text = repr(described)
    finally:
        admin.close()
    assert text.count("'compact'") >= 3 or text.count('"compact"') >= 3, text[:2000]
    again = {status.name: status for status in ensure_topics(settings)}
    assert not any(status.created for status in again.values())


def test_topics_table_aligns_long_names(broker, tmp_path):
    app_id = f"a-long-application-id-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "NURTURE_BROKER": broker, "NURTURE_WORKER_APP_ID": app_id, "NURTURE_LOG_LEVEL": "warning"}

    result = subprocess.run([str(Path(sys.executable).with_name("nurture")), "topics", "create"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"{app_id}-ledger-changelog" in result.stdout
    assert len({line.index(" partitions") for line in lines}) == 1, result.stdout
    assert all(line.split()[-1] == "created" for line in lines if line.startswith(app_id)), result.stdout
