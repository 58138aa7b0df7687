"""wip-mailer: the newsletter pipeline for "Work in Progress"."""

__version__ = "0.1.0"
