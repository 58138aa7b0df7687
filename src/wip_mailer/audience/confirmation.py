"""The double opt-in confirmation email: built from templates/confirm/, sent over SMTP."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from jinja2 import TemplateError

from wip_mailer import transport
from wip_mailer.audience.links import confirm_url
from wip_mailer.db import utcnow
from wip_mailer.errors import DeliveryError, TemplateRenderError
from wip_mailer.settings import Settings
from wip_mailer.templating import environment as template_environment
from wip_mailer.templating import load_theme


@dataclass(frozen=True)
class ConfirmationRequest:
    """Someone who must confirm joining a list."""

    subscriber_id: int
    list_id: int
    email: str
    name: str
    language: str
    list_name: str
    list_description: str


def confirmation_message(settings: Settings, request: ConfirmationRequest) -> EmailMessage:
    """The email, with headers set through the standard library (no header injection)."""
    context = {
        "name": request.name,
        "email": request.email,
        "language": request.language,
        "list_name": request.list_name,
        "list_description": request.list_description,
        "confirm_url": confirm_url(settings, request.subscriber_id, request.list_id),
        "confirm_days": settings.confirm_days,
        "privacy_url": settings.privacy_url,
    }
    environment = template_environment(settings)
    try:
        context["theme"] = load_theme(settings)
        subject = environment.get_template("confirm/subject.txt").render(context)
        text = environment.get_template("confirm/body.txt").render(context)
        html = environment.get_template("confirm/body.html").render(context)
    except TemplateError as exc:
        raise TemplateRenderError(f"The confirmation email templates could not be rendered: {exc}.") from None
    local, _, domain = request.email.rpartition("@")
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = Address(display_name=" ".join(request.name.split()), username=local, domain=domain)
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message["Subject"] = " ".join(subject.split())
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=settings.sender_domain or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def send_confirmations(settings: Settings, requests: Sequence[ConfirmationRequest]) -> int:
    """Send each request its confirmation email over one SMTP connection; returns how many.

    One message goes out through ``transport.send_single``; more share a connection.
    """
    if not requests:
        return 0
    if len(requests) == 1:
        transport.send_single(settings, confirmation_message(settings, requests[0]))
        return 1
    envelope_from = settings.bounce_address or settings.sender_address
    signer = transport.DkimSigner(settings) if settings.dkim_enabled else None
    client = transport.connect(settings)
    sent = 0
    try:
        for request in requests:
            data = transport.wire_bytes(settings, confirmation_message(settings, request), signer)
            try:
                client.sendmail(envelope_from, [request.email], data)
            except smtplib.SMTPRecipientsRefused:
                continue  # this address is refused; the others still get theirs
            sent += 1
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(
            f"Sending confirmation emails stopped after {sent} of {len(requests)}: {exc}."
        ) from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return sent
