"""Dispatch: send an edition to every selected subscriber exactly once, fast, crash-safe.

Modules, in the order a message meets them:
``campaign`` (the entry points: send, resume, and the send's steps; ``types`` holds what
they take and return, ``trial`` the dry run and test copies), ``control`` (pause,
cancel, reset, reading a campaign's state), ``ledger`` (the delivery rows, claims in
batches, the check at hand-over), ``runner`` (threads, batching of writes),
``ratelimit``, ``connection`` (one SMTP session), ``journal`` (what was handed to the
server, for crash recovery). Messages are built by ``wip_mailer.personalise``.
"""

from wip_mailer.dispatch.campaign import Progress, resume_campaign, send_edition
from wip_mailer.dispatch.control import (
    campaign_status,
    cancel_campaign,
    list_campaigns,
    pause_campaign,
    return_edition,
)
from wip_mailer.dispatch.types import CampaignSummary, SendRequest, SummaryStatus

__all__ = [
    "CampaignSummary",
    "Progress",
    "SendRequest",
    "SummaryStatus",
    "campaign_status",
    "cancel_campaign",
    "list_campaigns",
    "pause_campaign",
    "resume_campaign",
    "return_edition",
    "send_edition",
]
