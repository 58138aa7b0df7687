"""Pre-flight check of an edition before it is sent: render it once and look for trouble.

Blocking problems stop a send (dispatch and the scheduler call ``run_preflight`` first);
warnings are listed for the editor. A caller that passes the check can send
``report.rendered``, the exact HTML that was checked.

A real send (not test copies, not a dry run) is also refused while the settings are still
the template's placeholders (``placeholder_problems``), unless they mark a demo.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session

from wip_mailer.assemble import EditionContext, ItemContext, assemble_edition
from wip_mailer.errors import StateError, TemplateRenderError
from wip_mailer.fields import control_character, image_url_problem
from wip_mailer.render import UNSUBSCRIBE_URL_PLACEHOLDER, RenderedEdition, render_edition
from wip_mailer.settings import PREFIX, Settings, template_value
from wip_mailer.text.markdown import dropped_links

KIB = 1024
# Gmail clips HTML bodies above about 102 KB, hiding the footer with the unsubscribe link.
WARN_HTML_BYTES = 85 * KIB
BLOCK_HTML_BYTES = 100 * KIB

_IMG = re.compile(r"<img\b[^>]*>", re.I)
_ALT = re.compile(r'\balt="\s*[^"\s][^"]*"', re.I)


@dataclass
class PreflightReport:
    slug: str
    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    html_bytes: int = 0
    rendered: RenderedEdition | None = None

    @property
    def ok(self) -> bool:
        return not self.blocking

    def passes(self, strict: bool = False) -> bool:
        return self.ok and not (strict and self.warnings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "ok": self.ok,
            "html_bytes": self.html_bytes,
            "html_kib": round(self.html_bytes / KIB, 1),
            "blocking": self.blocking,
            "warnings": self.warnings,
        }


def run_preflight(session: Session, settings: Settings, slug: str, *,
                  real_send: bool = False) -> PreflightReport:
    """Assemble and render the edition ``slug``, then check it (see ``check_context``).

    With ``real_send`` (the edition going to its subscribers, not test copies or a dry
    run) placeholder settings are blocking problems too. An edition the assembler refuses
    (no approved items) is a blocking problem in the report; an unknown slug raises
    NotFoundError.
    """
    try:
        context = assemble_edition(session, slug)
    except StateError as exc:
        report = PreflightReport(slug=slug, blocking=[str(exc)])
    else:
        report = check_context(context, settings)
    if real_send:
        report.blocking.extend(placeholder_problems(settings))
    return report


# Names reserved for documentation and tests (RFC 2606, RFC 6761): never a real recipient's.
_RESERVED_TOP_LEVEL = frozenset({"example", "test", "invalid", "localhost"})


def _placeholder_host(host: str) -> str | None:
    """Why ``host`` cannot be what subscribers reach (a loopback or example name), or None."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if labels[-1] in _RESERVED_TOP_LEVEL or (len(labels) >= 2 and labels[-2] == "example"):
            return "a placeholder name reserved for examples"
        return None
    if address.is_loopback or address.is_unspecified:
        return "an address of this machine, which subscribers cannot reach"
    return None


def placeholder_problems(settings: Settings) -> list[str]:
    """What a real send must not go out with: the template's placeholders, one sentence each
    naming the setting to change. Nothing for a demo (``WIP_MAILER_DEMO=true``).

    The SMTP host is not looked at: a relay on 127.0.0.1:25 is normal in production.
    """
    if settings.demo:
        return []
    problems = []
    for key, url in (("BASE_URL", settings.base_url), ("ARCHIVE_URL", settings.archive_url)):
        why = _placeholder_host(urlsplit(url).hostname or "")
        if why:
            problems.append(f"{PREFIX}{key} is {url}, {why}: set it to the public https:// address "
                            "subscribers' links will open (or WIP_MAILER_DEMO=true for a demo).")
    bounce = parseaddr(settings.bounce_address)[1]
    for key, address in (("FROM", settings.sender_address), ("BOUNCE_ADDRESS", bounce)):
        domain = address.rpartition("@")[2]
        if address and _placeholder_host(domain):
            problems.append(f"{PREFIX}{key} uses the placeholder domain {domain}: set it to the "
                            "newsletter's own address (or WIP_MAILER_DEMO=true for a demo).")
    if settings.secret_key in ("", template_value(f"{PREFIX}SECRET_KEY")):
        problems.append(f"{PREFIX}SECRET_KEY is the template's: run `wip-mailer init` in a new folder "
                        "or set it to a random string of at least 32 characters.")
    return problems


def check_context(context: EditionContext, settings: Settings) -> PreflightReport:
    """Check an assembled edition: what would block a send, what the editor should look at."""
    report = PreflightReport(slug=context.slug)
    items = [item for section in context.sections for item in section.items]
    if not items:
        report.blocking.append(
            f"The edition {context.slug} has no approved items: approve at least one item."
        )
    try:
        rendered = render_edition(context, settings, personal=True)
    except TemplateRenderError as exc:
        report.blocking.append(str(exc))
        rendered = None
    if rendered is not None:
        report.rendered = rendered
        report.html_bytes = rendered.html_bytes
        _check_size(report)
        _check_unsubscribe(report, rendered)
        report.warnings.extend(rendered.warnings)
    subject_problem = control_character(context.subject)
    if subject_problem:
        report.blocking.append(f"The subject {context.subject[:60]!r} contains {subject_problem}, which "
                               "cannot go in an email header.")
    for section in context.sections:
        _check_links(report, f"The introduction of «{section.name}»", section.intro_md)
    for item in items:
        _check_links(report, f"«{item.title}»", item.body_md)
        _check_item(report, item)
    _check_links(report, "The contact footer", "  \n".join(context.contact_lines))
    if context.left_out:
        report.warnings.append(
            f"{context.left_out} item(s) not approved are left out of the edition."
        )
    return report


def _check_size(report: PreflightReport) -> None:
    size = report.html_bytes / KIB
    if report.html_bytes > BLOCK_HTML_BYTES:
        report.blocking.append(
            f"The HTML is {size:.1f} KiB, over the {BLOCK_HTML_BYTES // KIB} KiB limit: Gmail "
            "would clip it and hide the unsubscribe link; shorten items or move some out."
        )
    elif report.html_bytes >= WARN_HTML_BYTES:
        report.warnings.append(
            f"The HTML is {size:.1f} KiB, close to Gmail's clipping limit (about 102 KB); "
            f"sending is blocked above {BLOCK_HTML_BYTES // KIB} KiB."
        )


def _check_unsubscribe(report: PreflightReport, rendered: RenderedEdition) -> None:
    if f'href="{UNSUBSCRIBE_URL_PLACEHOLDER}"' not in rendered.html:
        report.blocking.append(
            "The HTML has no unsubscribe link: the email template must link to "
            "unsubscribe_url (required by law and by Gmail, Yahoo and Microsoft)."
        )
    if UNSUBSCRIBE_URL_PLACEHOLDER not in rendered.text:
        report.blocking.append(
            "The plain-text part has no unsubscribe link: the text template must show "
            "unsubscribe_url."
        )


def _check_links(report: PreflightReport, where: str, md: str) -> None:
    """Every link the email shows as plain text (``text.links.usable_url`` drops its URL),
    read from the Markdown the email is rendered from."""
    dropped = dropped_links(md or "")
    # Two wordings for the editor: a target still to fill in, or one an email cannot open.
    placeholders = [text for text, href in dropped if href.strip() in ("", "#")]
    unusable = [(text, href) for text, href in dropped if href.strip() not in ("", "#")]
    if placeholders:
        names = ", ".join(f"«{text}»" for text in placeholders)
        report.warnings.append(
            f"{where}: {len(placeholders)} link(s) without a target ({names}), "
            "shown as plain text."
        )
    if unusable:
        names = ", ".join(f"«{text}» → {href}" for text, href in unusable)
        report.warnings.append(
            f"{where}: {len(unusable)} link(s) to an address an email cannot open ({names}), "
            "shown as plain text; give the full address (https://…)."
        )


def _check_item(report: PreflightReport, item: ItemContext) -> None:
    if item.image_url and (problem := image_url_problem(item.image_url)):
        report.blocking.append(f"«{item.title}»: the image URL {item.image_url[:80]!r} cannot be used "
                               f"({problem}); it was left out: fix it with `wip-mailer items edit "
                               f"{item.id} --image-url URL` (or \"\" to remove it).")
    elif item.image_url and not (item.image_alt or "").strip():
        report.warnings.append(f"«{item.title}»: the image has no alt text.")
    inline_images = _IMG.findall(item.body_html or "")
    missing_alt = [tag for tag in inline_images if not _ALT.search(tag)]
    if missing_alt:
        report.warnings.append(
            f"«{item.title}»: {len(missing_alt)} image(s) in the text without alt text."
        )
