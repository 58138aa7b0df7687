"""Feedback, the last stage: what comes back to the bounce address.

``classify`` (what a message is: RFC 3464 DSN, ARF complaint, non-standard bounce via
flufl.bounce, delay, auto-reply, mailto unsubscribe), ``effects`` (match it to a delivery
or subscriber and apply it, once), ``sources`` (mbox, Maildir, IMAP, files), ``receiver``
(the SMTP server the MTA forwards bounces to), ``report`` (what was received).
The core stages do not import this package; the effect of a hard bounce lives in
``audience.bounces`` so that dispatch's SMTP-time 5xx goes through it too.
"""
