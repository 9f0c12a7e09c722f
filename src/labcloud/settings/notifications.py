"""How labcloud tells people: e-mail through SMTP, and signed webhooks."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MailSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings`: the SMTP server and how mail is sent."""

    smtp_url: str = Field(
        "",
        description="The SMTP server for e-mail: smtp://[user:password@]host[:port][?starttls=auto|required|"
        "never] or smtps://... (TLS at once); empty: no e-mail.",
    )
    mail_from: str = Field("labcloud <labcloud@localhost>", description="The sender of labcloud's e-mail.")
    smtp_ca_file: str = Field(
        "",
        description="CA certificates to trust for the SMTP server's TLS (a PEM file); empty: the system's.",
    )
    smtp_timeout_s: float = Field(20.0, gt=0, description="How long one SMTP conversation may take.")
    mail_retry_s: float = Field(
        60.0, gt=0, description="After a mail could not be sent: the wait before the next try."
    )
    mail_digest_window_s: float = Field(
        30.0,
        ge=0,
        description="A user's first ended job waits this long for others to end: several make one mail.",
    )


class WebhookSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings`: where webhooks may go, and their tries."""

    webhook_allow_private: bool = Field(
        False,
        description="Webhooks may target loopback, link-local and private addresses (a lab's own "
        "services); off, such targets are refused when subscribing and on every try.",
    )
    webhook_retry_s: float = Field(
        30.0,
        gt=0,
        description="Webhooks: the first wait before a failed try is tried again; it doubles (at most 6 h).",
    )
    webhook_max_attempts: int = Field(
        12, ge=1, le=50, description="Webhooks: tries of one delivery before it is given up."
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="Webhooks: how long one try may take.")
    webhook_pause_after: int = Field(
        5, ge=1, description="Webhooks: a subscription that gave up on this many events in a row is paused."
    )
