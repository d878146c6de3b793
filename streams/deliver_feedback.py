"""Feedback records of the delivery worker: the outcome of one command, for ``nurture.feedback``."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

SENT = "sent"
BOUNCED = "bounced"
FAILED = "failed"
MAX_DETAIL_LENGTH = 300

# Mail servers often quote the recipient in their replies, and feedback carries no personal data.
_ADDRESS = re.compile(r"<?[^\s<>@\"']+@[^\s<>@\"']+>?")


@dataclass(frozen=True)
class Outcome:
    """The result of one command: a feedback status, the bounce kind and a reason."""

    status: str
    bounce: str | None = None
    detail: str | None = None
    attempts: int = 0  # SMTP attempts made, 0 when nothing was sent


def feedback_event_id(command_id: str, status: str) -> str:
    """Return the feedback's event id, the same for the same command and status."""
    digest = hashlib.sha256(f"{command_id}\x1f{status}".encode("utf-8")).hexdigest()
    return f"fb-{digest[:32]}"


def redact(detail: str | None) -> str | None:
    """Replace email addresses in a server's reply and cut it to ``MAX_DETAIL_LENGTH`` characters."""
    if detail is None:
        return None
    text = _ADDRESS.sub("<address>", " ".join(detail.split()))
    return text[:MAX_DETAIL_LENGTH]


def build_feedback(command: dict[str, Any], outcome: Outcome, now_ms: int) -> dict[str, Any]:
    """Build the feedback record, conforming to ``schemas/feedback.avsc``, for a command's outcome."""
    return {
        "event_id": feedback_event_id(command["command_id"], outcome.status),
        "lead_id": command["lead_id"],
        "event_time": now_ms,
        "produced_at": now_ms,
        "command_id": command["command_id"],
        "channel": command["channel"],
        "status": outcome.status,
        "bounce": outcome.bounce,
        "detail": redact(outcome.detail),
    }
