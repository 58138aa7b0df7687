"""Render an assembled edition: Jinja2 → MJML → HTML (mjml-python) → inlined CSS (premailer),
plus a plain-text twin from its own template.

CONTRACT (used by dispatch): ``render_edition`` returns a ``RenderedEdition`` whose HTML and
text carry the personal links as the placeholder URLs below; dispatch swaps in each
recipient's real URLs, so the expensive rendering happens once per edition.
"""

from __future__ import annotations

from dataclasses import dataclass

# Personal links, replaced per recipient at send time. Plain ASCII URL characters only,
# so they survive MJML, premailer and text wrapping unchanged.
UNSUBSCRIBE_URL_PLACEHOLDER = "https://personal.wip-mailer.invalid/unsubscribe"
PREFERENCES_URL_PLACEHOLDER = "https://personal.wip-mailer.invalid/preferences"


@dataclass(frozen=True)
class RenderedEdition:
    subject: str
    html: str
    text: str

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))
