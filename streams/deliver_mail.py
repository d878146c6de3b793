"""Delivering one email command: expiry, rendering, SMTP attempts with retries, and the outcome."""

from __future__ import annotations

import threading
from typing import Any, Callable

import structlog

from nurture.config.settings import DeliverSettings
from nurture.streams.deliver_feedback import BOUNCED, FAILED, SENT, Outcome, redact
from nurture.streams.deliver_smtp import SendResult, SmtpMailer, build_email
from nurture.streams.deliver_templates import RenderError, TemplateBook, render_context

log = structlog.get_logger("nurture.deliver")

EXPIRED = "expired"
NO_ADDRESS = "no email address in the command's personalisation"


class MailDelivery:
    """Delivery of email commands, one at a time. Setting ``stopping`` cuts a retry wait short."""

    def __init__(self, settings: DeliverSettings, templates: TemplateBook, mailer: SmtpMailer,
                 clock: Callable[[], int], stopping: threading.Event) -> None:
        self._settings = settings
        self._templates = templates
        self._mailer = mailer
        self._clock = clock
        self._stopping = stopping

    def deliver(self, command: dict[str, Any]) -> Outcome | None:
        """Send the command's email and return its outcome, or None when a stop came during a retry wait."""
        if self._expired(command):
            return Outcome(FAILED, detail=EXPIRED)
        recipient = (command.get("personalisation") or {}).get("email")
        if not recipient:
            return Outcome(FAILED, detail=NO_ADDRESS)
        try:
            mail = self._templates.render(command.get("template"), render_context(command))
        except RenderError as exc:
            return Outcome(FAILED, detail=str(exc))
        try:
            message = build_email(mail, self._settings.from_address, recipient, command["command_id"])
        except (ValueError, TypeError) as exc:
            # The text of such errors may quote the header value, which is personal data.
            return Outcome(FAILED, detail=f"cannot compose the message: {type(exc).__name__}")

        return self._send_with_retries(command, message, recipient)

    def _send_with_retries(self, command: dict[str, Any], message: Any, recipient: str) -> Outcome | None:
        max_attempts = self._settings.max_attempts
        result = SendResult(sent=False)
        for attempt in range(1, max_attempts + 1):
            if attempt > 1 and self._expired(command):
                return Outcome(FAILED, detail=EXPIRED, attempts=attempt - 1)
            result = self._mailer.send(message, recipient)
            if result.sent:
                return Outcome(SENT, attempts=attempt)
            if result.permanent:
                return _final(result, attempts=attempt, bounce="hard")
            if attempt == max_attempts:
                break
            log.warning("mail_retry", command_id=command["command_id"], lead_id=command["lead_id"],
                        attempt=attempt, max_attempts=max_attempts,
                        retry_in_seconds=self._settings.retry_seconds, error=redact(result.detail))
            if self._stopping.wait(self._settings.retry_seconds):
                log.info("mail_abandoned", command_id=command["command_id"], lead_id=command["lead_id"],
                         attempt=attempt,
                         detail="stopping during a retry wait; the command is handled again after a restart")
                return None

        return _final(result, attempts=max_attempts, bounce="soft")

    def _expired(self, command: dict[str, Any]) -> bool:
        return self._clock() > command["expires_at"]


def _final(result: SendResult, attempts: int, bounce: str) -> Outcome:
    """Build the final outcome: a bounce when the server refused the recipient, else a failure."""
    if result.recipient_refused:
        return Outcome(BOUNCED, bounce=bounce, detail=result.detail, attempts=attempts)
    return Outcome(FAILED, detail=result.detail, attempts=attempts)
