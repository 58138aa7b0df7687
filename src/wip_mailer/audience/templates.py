"""Finding the templates for web pages and the confirmation email.

One small function on purpose: the render stage resolves the same folders and the two
can share it later. Order: WIP_MAILER_TEMPLATES_DIR (may override single files), the
templates packaged in the wheel, then the repository's ``templates/`` (editable install).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from wip_mailer.settings import Settings

PACKAGED = Path(__file__).resolve().parents[1] / "templates"
REPOSITORY = Path(__file__).resolve().parents[3] / "templates"


def template_environment(settings: Settings) -> Environment:
    folders = [Path(settings.templates_dir)] if settings.templates_dir else []
    folders += [folder for folder in (PACKAGED, REPOSITORY) if folder.is_dir()]
    return Environment(
        loader=ChoiceLoader([FileSystemLoader(str(folder)) for folder in folders]),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
