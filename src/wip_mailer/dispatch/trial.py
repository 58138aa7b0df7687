"""Trial sends, which touch no campaign and no ledger: a dry run that builds every message,
and the real message as "[TEST]" copies to a few addresses."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer import audience
from wip_mailer.db import session_scope
from wip_mailer.dispatch.connection import Connection, Outcome
from wip_mailer.dispatch.types import CampaignSummary, SendRequest, SummaryStatus
from wip_mailer.errors import InvalidInputError
from wip_mailer.personalise import Addressee, MessageTemplate
from wip_mailer.render import RenderedEdition
from wip_mailer.settings import Settings

TEST_SUBJECT_PREFIX = "[TEST] "


def dry_run(engine: Engine, settings: Settings, rendered: RenderedEdition, request: SendRequest,
             list_names: dict[int, str], where: Sequence[sa.ColumnElement[bool]] = ()) -> CampaignSummary:
    """Build every message exactly as a send would, send none (``where``: the send's extra
    conditions on the selection, such as not already sent)."""
    template = MessageTemplate(settings, rendered, campaign_id=0, list_names=list_names)
    built = failed = total_bytes = 0
    notes: list[str] = []
    with session_scope(engine) as session:
        for recipient in audience.select_recipients(session, request.lists, request.segment, where):
            try:
                message = template.build(Addressee(recipient.email, recipient.name, recipient.subscriber_id,
                                                   recipient.list_id, recipient.subscriber_id))
            except InvalidInputError as exc:
                failed += 1
                if len(notes) < 20:
                    notes.append(f"{recipient.email}: {exc}")
                continue
            built += 1
            total_bytes += len(message.smtp_data)
    return CampaignSummary(None, built + failed, 0, 0, failed, 0, 0, SummaryStatus.DRY_RUN,
                           bytes_built=total_bytes,
                           notes=tuple(notes))


def send_tests(settings: Settings, rendered: RenderedEdition, addresses: tuple[str, ...],
                list_names: dict[int, str]) -> CampaignSummary:
    """The real message to a few addresses, "[TEST]" in the subject; no campaign, no ledger."""
    from wip_mailer.audience.addresses import normalise_email
    from wip_mailer.fields import check_single_line

    # Every address is checked before the first goes out: one with a line break would be an
    # SMTP command of its own.
    addresses = tuple(normalise_email(check_single_line("--test-to address", address, show=True))
                      for address in addresses)
    template = MessageTemplate(settings, rendered, list_names=list_names, subject_prefix=TEST_SUBJECT_PREFIX)
    list_id = next(iter(list_names), None)
    connection = Connection(settings)
    sent = failed = 0
    notes: list[str] = []
    try:
        for address in addresses:
            message = template.build(Addressee(address, "", 0, list_id))
            result = connection.send(message)
            if result.outcome is Outcome.RETRY:
                result = connection.send(message)
            if result.outcome is Outcome.ACCEPTED:
                sent += 1
            else:
                failed += 1
                notes.append(f"{address}: {result.reply}")
    finally:
        connection.close()
    return CampaignSummary(None, len(addresses), sent, 0, failed, 0, 0, SummaryStatus.TEST,
                           notes=tuple(notes))
