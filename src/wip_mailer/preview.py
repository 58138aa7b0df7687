"""Preview an edition as a subscriber would see it: HTML, text and an optional screenshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session

from wip_mailer import browser
from wip_mailer.assemble import assemble_edition
from wip_mailer.errors import InvalidInputError
from wip_mailer.render import RenderedEdition, render_edition, with_personal_links
from wip_mailer.settings import Settings


@dataclass
class PreviewResult:
    rendered: RenderedEdition
    written: list[Path] = field(default_factory=list)
    screenshot_error: str | None = None  # set when a screenshot was asked for and not made


def dummy_links(settings: Settings) -> tuple[str, str]:
    """Unsubscribe and preferences links that look real but carry no subscriber's token."""
    return (
        f"{settings.base_url}/u/PREVIEW-NOT-A-REAL-TOKEN",
        f"{settings.base_url}/preferences/PREVIEW-NOT-A-REAL-TOKEN",
    )


def preview_edition(session: Session, settings: Settings, slug: str) -> RenderedEdition:
    """The edition as sent, with dummy personal links."""
    rendered = render_edition(assemble_edition(session, slug), settings, personal=True)
    return with_personal_links(rendered, *dummy_links(settings))


def write_preview(
    session: Session,
    settings: Settings,
    slug: str,
    html_out: Path,
    *,
    text_out: Path | None = None,
    screenshot_out: Path | None = None,
    width: int = 375,
) -> PreviewResult:
    """Write the preview files; a missing browser only costs the screenshot."""
    if not 200 <= width <= 3000:
        raise InvalidInputError(f"The screenshot width must be 200 to 3000 pixels, got {width}.")
    result = PreviewResult(rendered=preview_edition(session, settings, slug))
    for target, body in ((html_out, result.rendered.html), (text_out, result.rendered.text)):
        if target is None:
            continue
        try:
            target.write_text(body, encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"Cannot write {target}: {exc.strerror}.") from None
        result.written.append(target)
    if screenshot_out is not None:
        try:
            browser.screenshot(result.rendered.html, screenshot_out, width)
            result.written.append(screenshot_out)
        except browser.BrowserUnavailable as exc:
            result.screenshot_error = f"No screenshot: {exc}"
    return result
