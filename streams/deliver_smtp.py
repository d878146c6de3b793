"""Sending one email over SMTP and sorting failures into permanent and temporary ones."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from datetime import datetime, timezone

from nurture.config.errors import NurtureError
from nurture.config.settings import DeliverSettings
from nurture.streams.deliver_templates import RenderedMail

COMMAND_ID_HEADER = "X-Nurture-Command-Id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class SmtpSetupError(NurtureError):
    """The SMTP server cannot be reached or rejects the worker's session at start."""


@dataclass(frozen=True)
class SendResult:
    """The result of one SMTP attempt."""

    sent: bool
    permanent: bool = False  # a 5xx reply, so another attempt would fail the same way
    recipient_refused: bool = False  # the server refused the recipient, not the sender, message or session
    detail: str | None = None  # the server's reply or the connection error


SENT = SendResult(sent=True)


def build_email(mail: RenderedMail, from_address: str, recipient: str, command_id: str) -> EmailMessage:
    """Compose the message: plain text, with an HTML alternative when the template has one."""
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = recipient
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = _message_id(command_id, from_address)
    message[COMMAND_ID_HEADER] = command_id
    # Quoted-printable keeps the message 7-bit, because smtplib does not ask the server
    # for 8BITMIME and a server may not offer it.
    message.set_content(mail.text, cte="quoted-printable")
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html", cte="quoted-printable")

    return message


def _message_id(command_id: str, from_address: str) -> str:
    # The same command gives the same Message-ID, so a copy sent again after a
    # crash can be recognised by the receiving side.
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "nurture.invalid"
    local = command_id if _SAFE_ID.match(command_id) else "command"
    return f"<{local}.nurture@{domain}>"


class SmtpMailer:
    """Sends each message in its own SMTP session to the configured server."""

    def __init__(self, settings: DeliverSettings, password: str | None) -> None:
        self._settings = settings
        self._password = password

    def check(self) -> None:
        """Open and close one session (EHLO, STARTTLS and login as configured), or raise SmtpSetupError."""
        settings = self._settings
        try:
            smtp = self._connect()
            try:
                self._start_session(smtp)
            finally:
                _quit_quietly(smtp)
        except (smtplib.SMTPException, OSError, OverflowError) as exc:
            raise SmtpSetupError(
                f"SMTP server {settings.smtp_host}:{settings.smtp_port} cannot be used: "
                f"{_describe(exc)}; check the [deliver] smtp_* settings") from exc

    def send(self, message: EmailMessage, recipient: str) -> SendResult:
        """Make one attempt to hand ``message`` to the server for ``recipient``."""
        try:
            smtp = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            return classify(exc)
        try:
            self._start_session(smtp)
            smtp.send_message(message, to_addrs=[recipient])
        except (smtplib.SMTPException, OSError) as exc:
            return classify(exc)
        finally:
            _quit_quietly(smtp)

        return SENT

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        return smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds)

    def _start_session(self, smtp: smtplib.SMTP) -> None:
        smtp.ehlo()
        if self._settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if self._settings.smtp_user:
            smtp.login(self._settings.smtp_user, self._password or "")


def classify(error: Exception) -> SendResult:
    """Sort an SMTP or connection error: a 5xx reply is permanent, a 4xx reply or a lost connection temporary."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(error.recipients.values()), (0, b""))
        return SendResult(sent=False, permanent=_is_permanent(code), recipient_refused=True,
                          detail=_reply(code, reply))
    if isinstance(error, smtplib.SMTPResponseException):
        return SendResult(sent=False, permanent=_is_permanent(error.smtp_code),
                          detail=_reply(error.smtp_code, error.smtp_error))
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return SendResult(sent=False, detail=f"connection lost: {error}")
    if isinstance(error, smtplib.SMTPException):
        # Such as SMTPNotSupportedError: the server lacks STARTTLS or SMTPUTF8.
        return SendResult(sent=False, permanent=True, detail=_describe(error))
    return SendResult(sent=False, detail=f"connection failed: {_describe(error)}")


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {text}"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    # After an accepted message a failed QUIT changes nothing, and retrying would send a copy.
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
