"""Topic creation on the real broker, changelogs included."""

from __future__ import annotations

import uuid

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
