"""Intake: newsletter documents → draft items; editor Markdown → safe HTML; date labels."""

from wip_mailer.intake.dates import DateSpan, parse_date_label
from wip_mailer.intake.document import ImportWarning, parse_document
from wip_mailer.intake.importer import ImportReport, import_document
from wip_mailer.intake.markdown import Link, extract_links, markdown_to_html

__all__ = [
    "DateSpan",
    "ImportReport",
    "ImportWarning",
    "Link",
    "extract_links",
    "import_document",
    "markdown_to_html",
    "parse_date_label",
    "parse_document",
]
