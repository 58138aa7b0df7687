"""Where templates live and how they are rendered: one strict Jinja2 setup for every stage.

Editors change the look in ``templates/``, not in Python. Lookup order:
``settings.templates_dir`` (when set; a file there replaces the built-in file of the same
name), then the copy packaged in the wheel (``wip_mailer/templates``), else the repository's
top-level ``templates/`` (editable install).
"""

from __future__ import annotations

import re
import tomllib
import traceback
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from wip_mailer.errors import SettingsError, TemplateRenderError
from wip_mailer.settings import Settings

_PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGED_TEMPLATES = _PACKAGE_DIR / "templates"
_REPO_TEMPLATES = _PACKAGE_DIR.parents[1] / "templates"

# Templates whose name ends like this are plain text: no HTML escaping.
_TEXT_SUFFIXES = (".txt.j2", ".txt")


def builtin_templates_dir() -> Path:
    """The templates shipped with wip-mailer (packaged copy, else the repository's)."""
    if _PACKAGED_TEMPLATES.is_dir():
        return _PACKAGED_TEMPLATES
    return _REPO_TEMPLATES


def template_dirs(settings: Settings) -> list[Path]:
    """The folders searched for templates, first match wins."""
    dirs: list[Path] = []
    if settings.templates_dir:
        custom = Path(settings.templates_dir).expanduser()
        if not custom.is_dir():
            raise SettingsError(
                f"WIP_MAILER_TEMPLATES_DIR is {settings.templates_dir!r}, which is not a folder."
            )
        dirs.append(custom.resolve())
    dirs.append(builtin_templates_dir())
    return dirs


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(_TEXT_SUFFIXES)


@lru_cache(maxsize=8)
def _environment(dirs: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,  # a missing variable is an error, never a blank
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,  # an edited template is picked up by a long-running process
    )
    return env


def environment(settings: Settings) -> jinja2.Environment:
    """The shared strict Jinja2 environment for ``settings`` (cached per template path).

    Callers may add filters and globals they need; the environment is shared, so add
    only pure functions under names that say what they do.
    """
    return _environment(tuple(template_dirs(settings)))


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render one template; any failure becomes a TemplateRenderError naming template and line."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        searched = ", ".join(str(p) for p in getattr(env.loader, "searchpath", []))
        raise TemplateRenderError(
            f"The template {exc.name} was not found (searched: {searched})."
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or exc.name or name
        raise TemplateRenderError(
            f"Template {where}, line {exc.lineno}: syntax error: {exc.message}."
        ) from None
    except TemplateRenderError:
        raise
    except Exception as exc:  # undefined variables, bad filters, errors inside templates
        where, line = _template_frame(exc, env, name)
        detail = str(exc).rstrip(".") or type(exc).__name__
        raise TemplateRenderError(f"Template {where}, line {line}: {detail}.") from None


def _template_frame(exc: BaseException, env: jinja2.Environment, name: str) -> tuple[str, Any]:
    """The innermost traceback frame that belongs to a template (Jinja rewrites them so)."""
    dirs = [str(p) for p in getattr(env.loader, "searchpath", [])]
    found: tuple[str, Any] = (name, "?")
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(tuple(dirs)) or frame.filename.endswith(".j2"):
            found = (frame.filename, frame.lineno)
    return found


def load_labels(settings: Settings, path: str, language: str) -> tuple[dict[str, str], str]:
    """The strings of ``language`` from TOML files of per-language tables.

    The same file in a custom template folder overrides single keys of the built-in one.
    The first table of the built-in file is the default language; keys missing in
    ``language`` come from it. Returns the labels and the language actually used.
    """
    files = [d / path for d in template_dirs(settings) if (d / path).is_file()]
    if not files:
        raise TemplateRenderError(f"The labels file {path} was not found in the templates.")
    tables: dict[str, dict[str, str]] = {}
    for file in reversed(files):  # built-ins first, overrides on top
        for lang, table in _labels_file(file, file.stat().st_mtime_ns).items():
            tables.setdefault(lang, {}).update(table)
    default_language = next(iter(tables))
    labels = dict(tables[default_language])
    used = language if language in tables else default_language
    labels.update(tables[used])
    return labels, used


@lru_cache(maxsize=16)
def _labels_file(file: Path, mtime_ns: int) -> dict[str, dict[str, str]]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateRenderError(f"The labels file {file} is not valid TOML: {exc}.") from None
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if not tables:
        raise TemplateRenderError(f"The labels file {file} has no [language] table.")
    return {lang: {str(k): str(v) for k, v in table.items()} for lang, table in tables.items()}


# --- the theme: colours, fonts and logo shared by the email, the web pages and the archive ---

THEME_FILE = "theme.toml"
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_FONT = re.compile(r"[A-Za-z0-9 ,'\"-]+")
_COLOUR_KEYS = ("ink", "accent", "muted", "paper", "canvas", "rule", "button_text")


def load_theme(settings: Settings) -> dict[str, dict[str, Any]]:
    """The theme of ``templates/theme.toml`` (a custom copy overrides single keys), checked.

    Values go into CSS and HTML attributes, so each is checked for its shape (a colour is
    #rrggbb, a font list has no CSS punctuation, the logo is an https URL) rather than escaped.
    """
    files = [d / THEME_FILE for d in template_dirs(settings) if (d / THEME_FILE).is_file()]
    if not files:
        raise TemplateRenderError(f"The theme file {THEME_FILE} was not found in the templates.")
    theme: dict[str, dict[str, Any]] = {}
    for file in reversed(files):
        for table, values in _toml_file(file, file.stat().st_mtime_ns).items():
            if isinstance(values, dict):
                theme.setdefault(table, {}).update(values)
    where = files[0]
    for scheme in ("light", "dark"):
        colours = theme.get(scheme, {})
        for key in _COLOUR_KEYS:
            value = colours.get(key)
            if not isinstance(value, str) or not _COLOUR.fullmatch(value):
                raise TemplateRenderError(
                    f"The theme {where}: [{scheme}] {key} must be a colour such as \"#8a1538\", "
                    f"got {value!r}.")
    font = theme.get("fonts", {}).get("body")
    if not isinstance(font, str) or not _FONT.fullmatch(font):
        raise TemplateRenderError(
            f"The theme {where}: [fonts] body must be a list of font names, got {font!r}.")
    logo = theme.setdefault("logo", {})
    logo.setdefault("url", "")
    logo.setdefault("alt", "")
    url = logo["url"]
    if url and (not isinstance(url, str) or not url.startswith(("https://", "http://"))
                or any(c in url for c in ' "<>\'')):
        raise TemplateRenderError(f"The theme {where}: [logo] url must be an https:// URL, got {url!r}.")
    for key in ("width", "height"):
        size = logo.get(key)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 600:
            raise TemplateRenderError(
                f"The theme {where}: [logo] {key} must be a whole number of pixels from 1 to 600, "
                f"got {size!r}.")
    if not isinstance(logo["alt"], str):
        raise TemplateRenderError(f"The theme {where}: [logo] alt must be text.")
    return theme


@lru_cache(maxsize=16)
def _toml_file(file: Path, mtime_ns: int) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateRenderError(f"The theme file {file} is not valid TOML: {exc}.") from None
