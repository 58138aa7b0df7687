"""The pre-flight check on hand-built edition contexts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.render_fixtures import small_edition, synthetic_edition
from wip_mailer.assemble import SectionContext
from wip_mailer.preflight import BLOCK_HTML_BYTES, WARN_HTML_BYTES, check_context
from wip_mailer.render import UNSUBSCRIBE_URL_PLACEHOLDER
from wip_mailer.settings import Settings
from wip_mailer.templating import builtin_templates_dir


def test_small_edition_passes_with_warnings() -> None:
    report = check_context(small_edition(), Settings())
    assert report.ok and report.blocking == []
    assert report.rendered is not None and report.html_bytes == report.rendered.html_bytes
    assert UNSUBSCRIBE_URL_PLACEHOLDER in report.rendered.html
    warnings = "\n".join(report.warnings)
    assert "«Festival delle lanterne sul fiume»: 1 link(s) without a target («gruppo di lavoro»)" in warnings
    assert "«Bando per giovani fotografi»: the image has no alt text." in warnings
    assert "Esempiopoli" not in warnings  # that image has its alt text
    assert "2 item(s) not approved are left out" in warnings
    assert report.passes() and not report.passes(strict=True)


def test_no_approved_items_blocks() -> None:
    empty = small_edition(sections=(SectionContext("Top News", "", "", ()),), left_out=5)
    report = check_context(empty, Settings())
    assert not report.ok
    assert report.blocking == ["The edition 2099-03 has no approved items: approve at least one item."]


def test_size_budget_warns_then_blocks() -> None:
    fine = check_context(synthetic_edition(30), Settings())
    assert fine.html_bytes < WARN_HTML_BYTES and not any("KiB" in w for w in fine.warnings)
    close = check_context(synthetic_edition(45), Settings())
    assert WARN_HTML_BYTES <= close.html_bytes <= BLOCK_HTML_BYTES
    assert close.ok and any("close to Gmail's clipping limit" in w for w in close.warnings)
    over = check_context(synthetic_edition(55), Settings())
    assert over.html_bytes > BLOCK_HTML_BYTES
    assert not over.ok and "over the 100 KiB limit" in over.blocking[0]


def test_template_without_unsubscribe_link_blocks(tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "email"
    folder.mkdir(parents=True)
    for name in ("edition.mjml.j2", "edition.txt.j2"):
        source = (builtin_templates_dir() / "email" / name).read_text(encoding="utf-8")
        stripped = source.replace("{{ unsubscribe_url }}", "{{ view_online_url }}")
        assert stripped != source
        (folder / name).write_text(stripped, encoding="utf-8")
    report = check_context(small_edition(), Settings(templates_dir=str(tmp_path / "templates")))
    assert len(report.blocking) == 2
    assert report.blocking[0].startswith("The HTML has no unsubscribe link")
    assert report.blocking[1].startswith("The plain-text part has no unsubscribe link")


def test_template_error_blocks_and_names_the_template(tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "edition.mjml.j2").write_text("<mjml>\n<mj-body>{{ oops }}</mj-body></mjml>\n")
    report = check_context(small_edition(), Settings(templates_dir=str(tmp_path / "templates")))
    assert report.rendered is None and report.html_bytes == 0
    assert "edition.mjml.j2, line 2" in report.blocking[0] and "oops" in report.blocking[0]


def test_placeholder_links_found_in_markdown_when_links_were_not_parsed() -> None:
    context = small_edition()
    top = context.sections[0]
    bare = replace(top.items[0], links=())
    context = replace(context, sections=(replace(top, items=(bare,)),), left_out=0)
    report = check_context(context, Settings())
    assert report.warnings == [
        "«Festival delle lanterne sul fiume»: 1 link(s) without a target («gruppo di lavoro»), "
        "shown as plain text."
    ]


def test_images_in_the_text_without_alt_are_reported() -> None:
    context = small_edition()
    top = context.sections[0]
    with_img = replace(
        top.items[1], body_html='<p>x <img src="https://img.example.org/a.png"> '
        '<img src="https://img.example.org/b.png" alt="B"></p>'
    )
    context = replace(context, sections=(replace(top, items=(with_img,)),), left_out=0)
    report = check_context(context, Settings())
    assert report.warnings == [
        "«Visita della delegazione di Esempiopoli <& amici>»: 1 image(s) in the text without alt text."
    ]


def test_every_dropped_link_is_named_where_it_is() -> None:
    context = small_edition()
    top = context.sections[0]
    relative = replace(
        top.items[1], body_md="Il [verbale](/docs/verbale.pdf) e il [modulo](javascript:void(0))."
    )
    intro = replace(context.sections[1], intro_md="Le [foto](galleria.html) della visita.")
    context = replace(
        context,
        sections=(replace(top, items=(relative,)), intro),
        contact_lines=("[Scrivici](#)", "[www.example.org](https://www.example.org)"),
        left_out=0,
    )
    report = check_context(context, Settings())
    assert report.ok
    hint = "shown as plain text; give the full address (https://…)."
    assert report.warnings == [
        "The introduction of «Approfondimenti»: 1 link(s) to an address an email cannot open "
        f"(«foto» → galleria.html), {hint}",
        "«Visita della delegazione di Esempiopoli <& amici>»: 2 link(s) to an address an email "
        f"cannot open («verbale» → /docs/verbale.pdf, «modulo» → javascript:void(0)), {hint}",
        "The contact footer: 1 link(s) without a target («Scrivici»), shown as plain text.",
    ]
