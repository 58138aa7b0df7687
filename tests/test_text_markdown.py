"""Editor Markdown → sanitised HTML; hostile input must come out harmless."""

from html.parser import HTMLParser

import pytest

from wip_mailer.text.links import usable_url
from wip_mailer.text.markdown import ALLOWED_TAGS, Link, dropped_links, extract_links, markdown_to_html
from wip_mailer.text.plaintext import markdown_to_text


class _Elements(HTMLParser):
    """Every element and attribute a browser would see in the HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


def _elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Elements()
    parser.feed(html)
    return parser.elements

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    '![x](http://example.org/a.png" onerror="alert(1))',
    "<javascript:alert(1)>",
    '<div onmouseover="alert(1)">hover</div>',
    "<iframe src=https://evil.example></iframe>",
    "<style>body{display:none}</style>",
    '[x](https://example.org "title" onclick=alert(1))',
    "<svg><script>alert(1)</script></svg>",
    "<<script>script>alert(1)<</script>/script>",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_input_is_neutralised(hostile: str) -> None:
    html = markdown_to_html(f"Testo prima. {hostile} Testo dopo.")
    for tag, attrs in _elements(html):
        assert tag in ALLOWED_TAGS, html
        for name, value in attrs:
            assert not name.startswith("on"), html  # no event handlers
            if name in ("href", "src"):
                assert (value or "").startswith(("http://", "https://", "mailto:")), html
    assert "Testo prima." in html and "Testo dopo." in html  # the editor's own text survives


def test_placeholder_link_is_plain_text_and_real_links_stay() -> None:
    html = markdown_to_html("Il progetto [DE.a.RE](#) e il sito [BJCEM](https://www.example.org/bjcem).")
    assert html == (
        '<p>Il progetto DE.a.RE e il sito <a href="https://www.example.org/bjcem" '
        'rel="noopener noreferrer">BJCEM</a>.</p>'
    )


def test_autolink_becomes_an_anchor() -> None:
    html = markdown_to_html("Il sondaggio: <https://shorturl.example/bhEKO> Le risposte")
    url = "https://shorturl.example/bhEKO"
    assert f'<a href="{url}" rel="noopener noreferrer">{url}</a> Le risposte' in html


def test_mailto_and_formatting_and_hard_breaks() -> None:
    html = markdown_to_html("**Scrivi** a [noi](mailto:info@example.org)  \n*grazie*\n\n- uno\n- due")
    assert html == (
        '<p><strong>Scrivi</strong> a <a href="mailto:info@example.org" rel="noopener noreferrer">noi</a>'
        "<br>\n<em>grazie</em></p>\n<ul>\n<li>uno</li>\n<li>due</li>\n</ul>"
    )


def test_relative_link_has_no_use_in_an_email() -> None:
    assert markdown_to_html("[pagina](pagina.html)") == "<p>pagina</p>"


def test_empty_markdown_is_empty_html() -> None:
    assert markdown_to_html("  \n ") == ""


def test_links_are_extracted_in_order_with_placeholders_flagged() -> None:
    md = "A [uno](#), <https://example.org/due> e [tre](mailto:tre@example.org); [x](javascript:alert(1))."
    assert extract_links(md) == [
        Link("uno", None),
        Link("https://example.org/due", "https://example.org/due"),
        Link("tre", "mailto:tre@example.org"),
        Link("x", None),  # a javascript: link is a link whose URL is dropped, like "#"
    ]
    assert extract_links(md)[0].as_dict() == {"text": "uno", "url": None, "placeholder": True}
    assert dropped_links(md) == [("uno", "#"), ("x", "javascript:alert(1)")]


# --- the one link rule, the same in the HTML and in the text twin -----------------------

USABLE = [
    "https://www.example.org/bjcem",
    "http://example.org",
    "mailto:info@example.org",
    "tel:+390110000000",
    "HTTPS://EXAMPLE.ORG/Pagina",
]
DROPPED = [
    "#",
    "#programma",
    "/relative/page",
    "pagina.html",
    "../su/pagina",
    "//cdn.example.org/senza-schema",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "ftp://files.example.org/a.pdf",
    "file:///etc/passwd",
    "https://",
    "https:///senza-host",
    "mailto:",
    "TODO",
]


@pytest.mark.parametrize("url", USABLE)
def test_absolute_web_mail_and_phone_urls_are_usable(url: str) -> None:
    assert usable_url(url) == url
    assert usable_url(f"  {url} ") == url


@pytest.mark.parametrize("url", [None, "", "   ", *DROPPED])
def test_every_other_url_is_dropped(url: str | None) -> None:
    assert usable_url(url) is None


@pytest.mark.parametrize("url", DROPPED)
def test_a_dropped_link_reads_as_its_text_in_the_html_and_the_text_twin(url: str) -> None:
    md = f"Vedi [la pagina]({url}) entro venerdì."
    assert markdown_to_html(md) == "<p>Vedi la pagina entro venerdì.</p>"
    assert markdown_to_text(md) == "Vedi la pagina entro venerdì."
    assert dropped_links(md) == [("la pagina", url)]
    assert extract_links(md) == [Link("la pagina", None)]


@pytest.mark.parametrize("url", USABLE)
def test_a_usable_link_keeps_its_url_in_the_html_and_the_text_twin(url: str) -> None:
    md = f"Vedi [la pagina]({url}) entro venerdì."
    assert markdown_to_html(md) == (
        f'<p>Vedi <a href="{url}" rel="noopener noreferrer">la pagina</a> entro venerdì.</p>'
    )
    shown = url.removeprefix("mailto:")  # the text twin shows an address as an address
    assert markdown_to_text(md) == f"Vedi la pagina <{shown}> entro venerdì."
    assert dropped_links(md) == []
