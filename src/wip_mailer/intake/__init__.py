"""Intake: newsletter documents → draft items of an edition (parsing and import)."""

from wip_mailer.intake.document import ImportWarning, parse_document
from wip_mailer.intake.importer import ImportReport, import_document

__all__ = [
    "ImportReport",
    "ImportWarning",
    "import_document",
    "parse_document",
]
