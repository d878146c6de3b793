"""Feedback records and SMTP error sorting of `nurture deliver`."""

from __future__ import annotations

import smtplib

import fastavro.validation
import pytest

from nurture.config.errors import ConfigError
from nurture.config.settings import DEFAULT_TEMPLATES_DIR, load_settings
from nurture.streams.codecs import decode_event, encode_feedback
from nurture.streams.deliver_feedback import FAILED, SENT, Outcome, build_feedback, feedback_event_id, redact
from nurture.streams.deliver_smtp import classify

NOW = 1_733_330_000_000
COMMAND = {"command_id": "81bd5eeeb7de9f0b0638c10c10396cb4", "lead_id": "user_0539", "channel": "email"}


def test_event_id_deterministic_per_status() -> None:
    assert feedback_event_id("c1", "sent") == feedback_event_id("c1", "sent")
    assert feedback_event_id("c1", "sent") != feedback_event_id("c1", "failed")
    assert feedback_event_id("c1", "sent") != feedback_event_id("c2", "sent")
    assert feedback_event_id("c1", "sent").startswith("fb-")


def test_feedback_decodes_as_engine_reads_it() -> None:
    record = build_feedback(COMMAND, Outcome("bounced", bounce="hard", detail="550 5.1.1 unknown user"), NOW)

    event = decode_event("feedback", "json", encode_feedback(record), b"user_0539", now_ms=NOW)

    assert event.lead_id == "user_0539"
    assert event.event_time == NOW
    assert event.attrs["status"] == "bounced"
    assert event.attrs["bounce"] == "hard"
    assert event.attrs["command_id"] == COMMAND["command_id"]


def test_encode_rejects_unknown_status() -> None:
    record = build_feedback(COMMAND, Outcome("lost"), NOW)

    with pytest.raises(fastavro.validation.ValidationError, match="status"):
        encode_feedback(record)


def test_detail_hides_addresses() -> None:
    detail = "550 5.1.1 <zoe.lucja@example.com>: Recipient address rejected; also bob@example.org"

    assert redact(detail) == "550 5.1.1 <address>: Recipient address rejected; also <address>"
    assert build_feedback(COMMAND, Outcome(FAILED, detail=detail), NOW)["detail"].count("<address>") == 2


def test_detail_cut_and_none_kept() -> None:
    assert len(redact("x" * 1000)) == 300
    assert redact(None) is None
    assert build_feedback(COMMAND, Outcome(SENT), NOW)["detail"] is None


@pytest.mark.parametrize(
    ("error", "permanent", "recipient"),
    [
        (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 unknown user")}), True, True),
        (smtplib.SMTPRecipientsRefused({"a@example.com": (451, b"4.2.0 try later")}), False, True),
        (smtplib.SMTPSenderRefused(553, b"5.7.1 sender rejected", "n@example.com"), True, False),
        (smtplib.SMTPDataError(452, b"4.3.1 out of space"), False, False),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), True, False),
        (smtplib.SMTPConnectError(421, b"4.3.2 busy"), False, False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False, False),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), True, False),
        (ConnectionRefusedError(111, "Connection refused"), False, False),
        (TimeoutError("timed out"), False, False),
    ],
)
def test_classify_smtp_errors(error: Exception, permanent: bool, recipient: bool) -> None:
    result = classify(error)

    assert result.sent is False
    assert result.permanent is permanent
    assert result.recipient_refused is recipient
    assert result.detail


def test_classify_keeps_reply_code_and_text() -> None:
    result = classify(smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 unknown user")}))

    assert result.detail == "550 5.1.1 unknown user"


def test_deliver_settings_defaults() -> None:
    deliver = load_settings(environ={}).deliver

    assert deliver.group_id == "nurture-deliver"
    assert (deliver.smtp_host, deliver.smtp_port, deliver.smtp_starttls) == ("127.0.0.1", 25, False)
    assert deliver.max_attempts == 3
    assert deliver.templates_dir == str(DEFAULT_TEMPLATES_DIR)


def test_deliver_settings_from_environment() -> None:
    deliver = load_settings(environ={"NURTURE_DELIVER_SMTP_PORT": "2525", "NURTURE_DELIVER_SMTP_STARTTLS": "yes",
                                     "NURTURE_DELIVER_RETRY_SECONDS": "0.5"}).deliver

    assert deliver.smtp_port == 2525
    assert deliver.smtp_starttls is True
    assert deliver.retry_seconds == 0.5


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NURTURE_DELIVER_MAX_ATTEMPTS", "0", "NURTURE_DELIVER_MAX_ATTEMPTS: must be at least 1"),
        ("NURTURE_DELIVER_SMTP_PORT", "smtp", "NURTURE_DELIVER_SMTP_PORT: expected a whole number"),
        ("NURTURE_DELIVER_RETRY_SECONDS", "-1", "NURTURE_DELIVER_RETRY_SECONDS: must be at least 0"),
        ("NURTURE_DELIVER_SMTP_STARTTLS", "maybe", "NURTURE_DELIVER_SMTP_STARTTLS: expected true or false"),
    ],
)
def test_deliver_settings_rejected(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={variable: value})
