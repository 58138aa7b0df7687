"""Subscribers, lists, segments, consent and suppression.

CONTRACT (used by dispatch and the web endpoint): ``select_recipients`` streams one
``Recipient`` per address for a set of lists and an optional segment expression;
``email_hash`` is how suppressed addresses are kept; ``record_hard_bounce`` is what a
hard bounce does, at send time or read back later; ``unsubscribe`` records a
withdrawal; ``unsubscribe_url`` / ``preferences_url`` build personal links without
touching the database.
"""

from wip_mailer.audience.bounces import record_complaint, record_hard_bounce, record_soft_bounce
from wip_mailer.audience.consent import unsubscribe
from wip_mailer.audience.links import confirm_url, preferences_url, unsubscribe_url
from wip_mailer.audience.segments import InvalidSegmentError, parse_segment, segment_filter
from wip_mailer.audience.selection import (
    Recipient,
    count_recipients,
    recipients_query,
    resolve_lists,
    select_recipients,
)
from wip_mailer.audience.suppression import email_hash, is_suppressed, suppress

__all__ = [
    "InvalidSegmentError",
    "Recipient",
    "confirm_url",
    "count_recipients",
    "email_hash",
    "is_suppressed",
    "parse_segment",
    "preferences_url",
    "recipients_query",
    "record_complaint",
    "record_hard_bounce",
    "record_soft_bounce",
    "resolve_lists",
    "segment_filter",
    "select_recipients",
    "suppress",
    "unsubscribe",
    "unsubscribe_url",
]
