"""Rendering an edition context to HTML (MJML + premailer) and its plain-text twin."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from tests.render_fixtures import small_edition, synthetic_edition
from wip_mailer.errors import SettingsError, TemplateRenderError
from wip_mailer.render import (
    PREFERENCES_URL_PLACEHOLDER,
    UNSUBSCRIBE_URL_PLACEHOLDER,
    clean_html,
    inline_css,
    render_edition,
    with_personal_links,
)
from wip_mailer.settings import Settings
from wip_mailer.templating import builtin_templates_dir, template_dirs

KIB = 1024


def custom_templates(tmp_path: Path, name: str, text: str) -> Settings:
    """Settings whose template folder overrides one file."""
    folder = tmp_path / "my-templates"
    (folder / Path(name).parent).mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return Settings(templates_dir=str(folder))


def test_html_has_the_whole_edition_and_the_email_essentials() -> None:
    rendered = render_edition(small_edition(), Settings())
    html = rendered.html
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="it"' in html
    shown = unescape(html)
    for text in ("Work in Progress", "Marzo-Aprile 2099", "a cura dell'Ufficio Esempio",
                 "Festival delle lanterne sul fiume", "3-5 marzo", "12 marzo",
                 "Top News", "Approfondimenti", "Coming Soon", "Scambio di studenti",
                 "Delegazione universitaria", "Via degli Esempi 1", "Visualizza nel browser"):
        assert text in shown, text
    # titles are escaped, never injected
    assert "Esempiopoli &lt;&amp; amici&gt;" in html
    # links keep their targets; the placeholder link is plain text, not a dead link
    assert 'href="https://lanterne.example.org/programma"' in html
    assert 'href="mailto:info@example.org"' in html
    assert 'href="#"' not in html and "gruppo di lavoro" in html
    assert re.search(r"<a[^>]*>gruppo di lavoro</a>", html) is None
    # the personal links are the placeholders dispatch replaces; the archive copy is linked
    assert f'href="{UNSUBSCRIBE_URL_PLACEHOLDER}"' in html
    assert f'href="{PREFERENCES_URL_PLACEHOLDER}"' in html
    assert 'href="http://127.0.0.1:8000/archive/2099-03/"' in html
    assert rendered.subject == "Work in Progress – Marzo-Aprile 2099"


def test_css_is_inlined_and_media_rules_keep_important() -> None:
    html = render_edition(small_edition(), Settings()).html
    # the <mj-style inline="inline"> rules end up on the elements themselves
    assert re.search(r'<h3 class="item-title" style="[^"]*font-size:18px', html)
    media = re.findall(r"@media[^{]*\{(?:[^{}]*\{[^}]*\})+\s*\}", html)
    assert media, "the @media rules must stay in the head"
    mobile = "\n".join(block for block in media if re.search(r"max-width:\s*479px", block))
    declarations = re.findall(r"\{([^{}]*)\}", mobile)
    assert declarations and all("!important" in rule for rule in declarations)
    assert re.search(r"padding-left:\s*16px\s*!important", mobile)


def test_no_network_access_even_for_remote_css(tmp_path: Path, no_network: list[Any]) -> None:
    template = (builtin_templates_dir() / "email/edition.mjml.j2").read_text(encoding="utf-8")
    hostile = template.replace(
        "<mj-style inline=\"inline\">",
        "<mj-style inline=\"inline\">@import url(\"https://css.example.org/remote.css\");",
        1,
    ).replace(
        "<mj-attributes>",
        '<mj-raw><link rel="stylesheet" href="https://css.example.org/linked.css"></mj-raw>'
        "<mj-attributes>",
        1,
    )
    assert hostile != template
    settings = custom_templates(tmp_path, "email/edition.mjml.j2", hostile)
    rendered = render_edition(synthetic_edition(), settings)
    assert "Notizia numero 30" in rendered.html
    assert no_network == []
    render_edition(small_edition(), Settings())
    assert no_network == []


def test_the_fixture_guard_does_catch_network_access(no_network: list[Any]) -> None:
    # the guard above is only worth something if a fetch would be noticed
    with pytest.raises(OSError):
        socket.create_connection(("css.example.org", 443))
    assert len(no_network) == 1


def test_inline_css_keeps_an_uppercase_or_lowercase_doctype() -> None:
    for doctype in ("<!doctype html>", "<!DOCTYPE html>"):
        page = "<html><head><style>p{color:red}</style></head><body><p>x</p></body></html>"
        out = inline_css(doctype + page)
        assert out.startswith("<!DOCTYPE html>")
        assert '<p style="color:red">x</p>' in out


def test_archive_copy_has_no_personal_links() -> None:
    rendered = render_edition(small_edition(), Settings(), personal=False)
    for body in (rendered.html, rendered.text):
        assert "personal.wip-mailer.invalid" not in body
        assert "Annulla l'iscrizione" not in body and "Annulla l&#39;iscrizione" not in body
    assert "Visualizza nel browser" not in rendered.html
    assert "Festival delle lanterne sul fiume" in rendered.html
    assert not rendered.personal


def test_preview_links_replace_the_placeholders_and_are_escaped() -> None:
    rendered = render_edition(small_edition(), Settings())
    preview = with_personal_links(rendered, "https://x.example/u?a=1&b=2", "https://x.example/p")
    assert "personal.wip-mailer.invalid" not in preview.html + preview.text
    assert 'href="https://x.example/u?a=1&amp;b=2"' in preview.html
    assert "https://x.example/u?a=1&b=2" in preview.text


def test_text_twin_has_every_title_and_link_and_is_wrapped() -> None:
    context = synthetic_edition()
    text = render_edition(context, Settings()).text
    for section in context.sections:
        assert section.name.upper() in text
        for item in section.items:
            assert item.title in text
            if item.date_label:
                assert item.date_label in text
            for link in item.links:
                if link.url:
                    assert link.url.removeprefix("mailto:") in text
            for url in re.findall(r'href="([^"#][^"]*)"', item.body_html):
                assert url.removeprefix("mailto:") in text
    for line in text.splitlines():
        assert len(line) <= 78 or " " not in line.strip(), line
    assert "PROGETTO-7" in text and "[PROGETTO-7](#)" not in text  # placeholder: bare text
    assert "<https://short.example.org/p7>" not in text  # an autolink reads as the bare URL
    assert f"Annulla l'iscrizione: {UNSUBSCRIBE_URL_PLACEHOLDER}" in text
    assert f"Gestisci le preferenze: {PREFERENCES_URL_PLACEHOLDER}" in text
    assert "<p>" not in text and "&amp;" not in text


def test_text_lists_and_contacts_keep_their_shape() -> None:
    text = render_edition(small_edition(), Settings()).text
    assert "- Sindaco di Esempiopoli\n- Delegazione universitaria" in text
    assert "Via degli Esempi 1\n00000 Cittàfinta\nredazione@example.org" in text
    assert "Lanterne <https://lanterne.example.org/programma>" in text
    assert "[La delegazione in sala]" in text


def test_english_labels_and_unknown_language_fallback() -> None:
    english = render_edition(small_edition(language="en"), Settings())
    assert "Unsubscribe" in english.html and "View in your browser" in english.html
    assert "Annulla" not in english.html and '<html lang="en"' in english.html
    assert english.warnings == ()
    french = render_edition(small_edition(language="fr"), Settings())
    assert "Annulla" in french.text and french.language == "it"
    assert any("'fr'" in warning for warning in french.warnings)


def test_full_size_edition_stays_well_under_gmail_clipping() -> None:
    rendered = render_edition(synthetic_edition(30), Settings())
    assert len(re.findall(r'class="item( first)?"', rendered.html)) == 31  # 30 news + 1 coming soon
    assert rendered.html_bytes <= 72 * KIB


def test_markdown_is_used_when_there_is_no_html() -> None:
    context = small_edition()
    top = context.sections[0]
    bare = replace(top.items[0], body_html="")
    context = replace(context, sections=(replace(top, items=(bare,)),), contact_html="")
    html = render_edition(context, Settings()).html
    assert 'href="https://lanterne.example.org/programma"' in html
    assert "gruppo di lavoro" in html and 'href="#"' not in html
    assert 'href="mailto:redazione@example.org"' in html


def test_editor_html_is_sanitised_again() -> None:
    dirty = (
        '<p onclick="x()">ok <script>alert(1)</script><a href="javascript:alert(1)">bad</a> '
        '<a href="">empty</a> <a href="https://fine.example.org/">fine</a></p>'
    )
    cleaned = str(clean_html(dirty))
    assert "script" not in cleaned and "onclick" not in cleaned and "javascript" not in cleaned
    assert "bad" in cleaned and "empty" in cleaned and "<a>" not in cleaned
    assert '<a href="https://fine.example.org/">fine</a>' in cleaned


def test_editor_html_follows_the_one_link_rule() -> None:
    dirty = '<p><a href="/relative/page">rel</a> <a href="#top">top</a> <a href="tel:+39011">tel</a></p>'
    assert str(clean_html(dirty)) == '<p>rel top <a href="tel:+39011">tel</a></p>'


def test_undefined_variable_is_an_error_naming_template_and_line(tmp_path: Path) -> None:
    settings = custom_templates(
        tmp_path, "email/edition.txt.j2", "{{ edition.title }}\n\n{{ edition.no_such_field }}\n"
    )
    with pytest.raises(TemplateRenderError) as caught:
        render_edition(small_edition(), settings)
    message = str(caught.value)
    assert "edition.txt.j2" in message and "line 3" in message and "no_such_field" in message


def test_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    settings = custom_templates(tmp_path, "email/edition.mjml.j2", "<mjml>\n{% if %}\n</mjml>\n")
    with pytest.raises(TemplateRenderError, match=r"edition\.mjml\.j2, line 2: syntax error"):
        render_edition(small_edition(), settings)


def test_mjml_that_does_not_compile_is_a_template_error(tmp_path: Path) -> None:
    settings = custom_templates(
        tmp_path, "email/edition.mjml.j2", "<mjml><mj-body>{{ '<' | safe }} oops</mj-body></mjml>"
    )
    with pytest.raises(TemplateRenderError, match="does not compile"):
        render_edition(small_edition(), settings)


def test_custom_template_folder_overrides_one_file_and_falls_back(tmp_path: Path) -> None:
    settings = custom_templates(
        tmp_path, "email/labels.toml", '[it]\nunsubscribe = "Cancellami"\n'
    )
    assert template_dirs(settings)[0] == (tmp_path / "my-templates").resolve()
    rendered = render_edition(small_edition(), settings)
    assert "Cancellami" in rendered.html and "Cancellami: " in rendered.text
    assert "Visualizza nel browser" in rendered.html  # other labels come from the built-ins
    assert "Festival delle lanterne" in rendered.html  # the HTML template came from the built-ins


def test_missing_template_folder_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not a folder"):
        template_dirs(Settings(templates_dir=str(tmp_path / "absent")))


def test_builtin_templates_are_found() -> None:
    folder = builtin_templates_dir()
    assert (folder / "email" / "edition.mjml.j2").is_file()
    assert (folder / "email" / "labels.toml").is_file()


def test_dark_mode_meta_and_rules_and_a_plain_hidden_preview() -> None:
    html = render_edition(small_edition(), Settings()).html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    dark = re.search(r"@media \(prefers-color-scheme: ?dark\)\s*\{(.*?)\}\s*</style>", html, re.S)
    assert dark and "#f4a3bb !important" in dark.group(1)  # the theme's dark accent
    preview = re.search(r'<div class="preheader" style="([^"]*)"[^>]*>([^<]*)</div>', html)
    assert preview and "Festival delle lanterne" in preview.group(2)
    assert "color" not in preview.group(1) and "font-size" not in preview.group(1)  # no colour trick
    assert html.index('class="preheader"') < html.index('class="masthead"')


def test_index_of_titles_above_the_setting_with_anchors_and_the_web_copy() -> None:
    context = synthetic_edition(12)
    html = render_edition(context, Settings()).html
    items = [item for section in context.sections for item in section.items]
    toc = re.search(r'<div class="toc".*?</div>', html, re.S)
    assert toc and "In questo numero" in toc.group(0)
    anchors = re.findall(r'href="#(item-\d+)"', toc.group(0))
    assert anchors == [f"item-{n}" for n in range(1, len(items) + 1)]
    for anchor in anchors:
        assert html.count(f'id="{anchor}"') == 1
    assert f'href="http://127.0.0.1:8000/archive/{context.slug}/"' in toc.group(0)
    english = render_edition(replace(context, language="en"), Settings()).html
    assert "In this issue" in english
    few = render_edition(small_edition(), Settings()).html  # 5 items, fewer than 9
    assert 'class="toc"' not in few
    off = render_edition(context, replace(Settings(), email_index_min_items=0)).html
    assert 'class="toc"' not in off
    always = render_edition(small_edition(), replace(Settings(), email_index_min_items=1)).html
    assert 'class="toc"' in always


def test_privacy_notice_linked_from_the_footer_when_set() -> None:
    assert "Informativa sulla privacy" not in render_edition(small_edition(), Settings()).html
    settings = replace(Settings(), privacy_url="https://www.example.org/privacy")
    html = render_edition(small_edition(), settings).html
    footer = html[html.index('class="footer"'):]
    assert 'href="https://www.example.org/privacy"' in footer and "Informativa sulla privacy" in footer


def test_a_bad_theme_value_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "theme.toml").write_text('[dark]\naccent = "red; background: url(x)"\n', encoding="utf-8")
    settings = replace(Settings(), templates_dir=str(tmp_path))
    with pytest.raises(TemplateRenderError, match=r"\[dark\] accent must be a colour"):
        render_edition(small_edition(), settings)
