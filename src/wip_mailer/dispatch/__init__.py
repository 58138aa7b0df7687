"""Dispatch: send an edition to every selected subscriber exactly once, fast, crash-safe.

Modules, in the order a message meets them:
``campaign`` (the entry points: send, resume, status), ``ledger`` (the delivery rows,
claims in batches, the campaign lease), ``runner`` (threads, batching of writes),
``ratelimit``, ``connection`` (one SMTP session), ``journal`` (what was handed to the
server, for crash recovery). Messages are built by ``wip_mailer.personalise``.
"""

from wip_mailer.dispatch.campaign import (
    CampaignSummary,
    Progress,
    SendRequest,
    campaign_status,
    list_campaigns,
    resume_campaign,
    send_edition,
)

__all__ = [
    "CampaignSummary",
    "Progress",
    "SendRequest",
    "campaign_status",
    "list_campaigns",
    "resume_campaign",
    "send_edition",
]
