"""What a firing does: send, check, remind."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy import Engine

from wip_mailer.db import session_scope
from wip_mailer.editorial import get_edition
from wip_mailer.errors import StateError
from wip_mailer.models import (
    ScheduledJob,
    ScheduleKind,
    ScheduleStatus,
)
from wip_mailer.schedule.jobs import list_schedules
from wip_mailer.settings import Settings

# --- what a firing does ----------------------------------------------------------------

@dataclass(frozen=True)
class ActionContext:
    engine: Engine
    settings: Settings
    job: ScheduledJob
    slug: str
    title: str


def _send_action(context: ActionContext) -> str:
    # Exactly the path of `wip-mailer send`: dispatch runs the pre-flight check (as for a real
    # send: placeholder settings block it) and raises StateError when it blocks.
    from wip_mailer.dispatch import SendRequest, send_edition
    from wip_mailer.preflight import run_preflight

    job = context.job
    summary = send_edition(
        context.engine, context.settings,
        SendRequest(slug=context.slug, lists=tuple(job.lists), segment=job.segment),
        preflight=functools.partial(run_preflight, real_send=True),
    )
    return (
        f"campaign {summary.campaign_id} {summary.status}: {summary.sent} sent, "
        f"{summary.deferred} deferred, {summary.failed} failed, {summary.skipped} skipped "
        f"of {summary.recipients}"
    )


def _check_action(context: ActionContext) -> str:
    from wip_mailer.preflight import run_preflight

    with session_scope(context.engine) as session:
        report = run_preflight(session, context.settings, context.slug, real_send=True)
    blocking, warnings = list(report.blocking), list(report.warnings)
    if blocking:
        raise StateError(
            f"The check of {context.slug} found {len(blocking)} blocking problem(s): "
            + "; ".join(str(problem) for problem in blocking)
        )
    return f"check passed with {len(warnings)} warning(s)"


def _reminder_action(context: ActionContext) -> str:
    from wip_mailer.transport import send_single

    body = reminder_text(context.engine, context.settings, context.job, context.slug, context.title)
    subject = " ".join(f"Reminder: {context.title} ({context.slug})".split())  # one header line
    for address in context.job.notify:
        message = EmailMessage()
        message["From"] = context.settings.sender
        message["To"] = address
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=context.settings.sender_domain or None)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        send_single(context.settings, message)
    return f"reminder sent to {', '.join(context.job.notify)}"


def reminder_text(engine: Engine, settings: Settings, job: ScheduledJob, slug: str, title: str) -> str:
    upcoming = [
        view for view in list_schedules(engine, (ScheduleStatus.SCHEDULED,))
        if view.slug == slug and view.kind == ScheduleKind.SEND
    ]
    with session_scope(engine) as session:
        status = get_edition(session, slug).status
    lines = [
        f"This is reminder #{job.id} about the edition {title} ({slug}).",
        f"Its status is {status}.",
    ]
    if upcoming:
        lines.append("It is scheduled to be sent:")
        lines += [f"  #{view.id} on {view.when} to {', '.join(view.lists)}" for view in upcoming]
    else:
        lines.append("No send is scheduled for it yet.")
    lines.append(f"Check it with: wip-mailer check {slug}")
    return "\n".join(lines) + "\n"


# kind -> what a firing does; each returns a one-line outcome or raises WipMailerError.
ACTIONS: dict[str, Callable[[ActionContext], str]] = {
    ScheduleKind.SEND: _send_action,
    ScheduleKind.CHECK: _check_action,
    ScheduleKind.REMINDER: _reminder_action,
}
