"""One exception hierarchy for the whole library.

Every error carries a complete sentence meant for the person at the keyboard;
the CLI prints ``str(error)`` as one line and exits non-zero.
"""


class WipMailerError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = 1


class SettingsError(WipMailerError):
    """A setting is missing or malformed."""

    exit_code = 2


class DatabaseError(WipMailerError):
    """The database is missing, unreachable or at the wrong schema revision."""


class NotFoundError(WipMailerError):
    """A named edition, item, list, subscriber or campaign does not exist."""


class InvalidInputError(WipMailerError):
    """Input (a file, an option, a field) is not what was expected."""


class StateError(WipMailerError):
    """The action is not allowed in the object's current state."""


class TemplateRenderError(WipMailerError):
    """A template could not be rendered."""


class DeliveryError(WipMailerError):
    """Sending failed in a way that stops the whole run."""
