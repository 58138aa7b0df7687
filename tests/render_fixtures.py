"""Hand-built edition contexts (our own invented text) for the render tests.

``small_edition`` exercises every feature once; ``synthetic_edition`` is a full-size edition
(30 items with links, long unbreakable URLs, lists) to check size and layout.
"""

from __future__ import annotations

from datetime import date

from markdown_it import MarkdownIt

from wip_mailer.assemble import EditionContext, ItemContext, LinkContext, SectionContext

_MD = MarkdownIt("commonmark")

# An image URL as editors give them (absolute https); data: URLs are dropped at render. The
# .invalid name never resolves, so nothing is fetched while the layout is measured.
PIXEL = "https://images.wip-mailer.invalid/pixel-40x20.png"


def md_html(md: str) -> str:
    """Stand-in for text.markdown_to_html in these fixtures: placeholder links as text."""
    html = _MD.render(md)
    return html.replace('<a href="#">', "<a>")


def item(
    item_id: int,
    title: str,
    body_md: str,
    *,
    date_label: str | None = None,
    links: tuple[LinkContext, ...] = (),
    image_url: str | None = None,
    image_alt: str | None = None,
) -> ItemContext:
    return ItemContext(
        id=item_id,
        title=title,
        date_label=date_label,
        start_date=None,
        end_date=None,
        body_html=md_html(body_md),
        body_md=body_md,
        links=links,
        image_url=image_url,
        image_alt=image_alt,
    )


CONTACT_LINES = (
    "Ufficio Esempio",
    "Via degli Esempi 1",
    "00000 Cittàfinta",
    "[redazione@example.org](mailto:redazione@example.org)",
    "[www.example.org/ufficio](https://www.example.org/ufficio)",
)


def small_edition(language: str = "it", **overrides: object) -> EditionContext:
    news = (
        item(
            1,
            "Festival delle lanterne sul fiume",
            "Il comitato [Lanterne](https://lanterne.example.org/programma) presenta il "
            "programma; iscrizioni al link <https://short.example.org/abc123> e notizie dal "
            "[gruppo di lavoro](#). Scrivere a [info@example.org](mailto:info@example.org).",
            date_label="3-5 marzo",
            links=(
                LinkContext("Lanterne", "https://lanterne.example.org/programma"),
                LinkContext("https://short.example.org/abc123", "https://short.example.org/abc123"),
                LinkContext("gruppo di lavoro", None),
                LinkContext("info@example.org", "mailto:info@example.org"),
            ),
        ),
        item(
            2,
            "Visita della delegazione di Esempiopoli <& amici>",
            "Un incontro istituzionale di una mattina.",
            date_label="12 marzo",
            image_url=PIXEL,
            image_alt="La delegazione in sala",
        ),
        item(3, "Bando per giovani fotografi", "Scadenza a fine mese.", image_url=PIXEL),
    )
    approfondimenti_md = (
        "Sul sito ([www.example.org/archivio](https://www.example.org/archivio)) i resoconti.\n\n"
        "#### Delegazioni ricevute\n\n- Sindaco di Esempiopoli\n- Delegazione universitaria\n"
    )
    values: dict[str, object] = {
        "slug": "2099-03",
        "title": "Marzo-Aprile 2099",
        "language": language,
        "period_start": date(2099, 3, 1),
        "period_end": date(2099, 4, 30),
        "subject": "Work in Progress – Marzo-Aprile 2099",
        "sections": (
            SectionContext("Top News", "", "", news),
            SectionContext("Approfondimenti", md_html(approfondimenti_md), approfondimenti_md),
            SectionContext(
                "Coming Soon", "", "",
                (item(4, "Scambio di studenti con Cittàlontana", "", date_label="maggio"),),
            ),
        ),
        "credit": "a cura dell'Ufficio Esempio",
        "contact_lines": CONTACT_LINES,
        "contact_html": md_html("  \n".join(CONTACT_LINES)),
        "left_out": 2,
    }
    values.update(overrides)
    return EditionContext(**values)  # type: ignore[arg-type]


_TEXT = (
    "la città partecipa al progetto europeo con partner locali e internazionali per "
    "rafforzare la cooperazione decentrata tra comunità giovani scuole e associazioni del "
    "territorio attraverso incontri workshop e scambi di buone pratiche"
)
_WORDS = _TEXT.split(" ")


def synthetic_edition(items: int = 30) -> EditionContext:
    """A full-size edition: ``items`` news of about 110 words, each with two or three links."""
    news = []
    for n in range(1, items + 1):
        words = [_WORDS[(n * 7 + k) % len(_WORDS)] for k in range(100)]
        body = (
            f"Nell'ambito del progetto [PROGETTO-{n}](#) " + " ".join(words[:50])
            + f" al seguente link <https://short.example.org/p{n}> "
            + " ".join(words[50:])
            + f". Informazioni: [www.example.org/progetti/{n}/una-pagina-con-un-indirizzo-molto-"
            f"lungo-senza-spazi-{n}](https://www.example.org/progetti/{n}/una-pagina-con-un-"
            f"indirizzo-molto-lungo-senza-spazi-{n})."
        )
        news.append(
            item(
                n,
                f"Notizia numero {n}: incontro internazionale sul tema {_WORDS[n % len(_WORDS)]}",
                body,
                date_label=f"{n % 28 + 1} gennaio",
                links=(
                    LinkContext(f"PROGETTO-{n}", None),
                    LinkContext(f"https://short.example.org/p{n}", f"https://short.example.org/p{n}"),
                ),
            )
        )
    return small_edition(
        slug="2099-synthetic",
        sections=(SectionContext("Top News", "", "", tuple(news)), *small_edition().sections[1:]),
        left_out=0,
    )
