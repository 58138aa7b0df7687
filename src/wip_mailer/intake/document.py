"""Read a newsletter document (Markdown, often converted from the published PDF) into
sections and items, without touching the database.

The document's shape, as the office writes it::

    # Work in Progress                   masthead
    ## Gennaio-Febbraio 2024             period label
    a cura del ...                       credit line(s)
    ## Top News ...                      a section (known name, or a heading with headings under it)
    ### Title  |  **Title**              an item: a heading (# to ####) or a bold line alone
    #### 9-11 gennaio  |  **9-11 gennaio**   its date line, right under the title (optional)
    Body paragraphs, links, [placeholders](#), image descriptions, page-break cuts
    ---
    # Approfondimenti                    free text and lists: the section's introduction
    # Coming Soon                        "- Entry | date" lines: one item each
    Gabinetto del Sindaco  ...           contact footer: edition metadata, not an item

Conversion from PDF leaves traces the parser repairs: a paragraph cut in two by a page
break is joined; a description of an image becomes the item's image alt text, never body.

This module is over 500 lines on purpose: it is one parser whose passes (blocks, sections,
items, dates on title lines, repairs) share one line model, and splitting them would
scatter the rules a reader needs side by side.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from markdown_it import MarkdownIt
from markdown_it.token import Token

from wip_mailer.text.dates import looks_like_date_label, parse_date_label


class SectionKind(StrEnum):
    NEWS = "news"  # titled items with a date line and a body
    TEXT = "text"  # free text kept whole as the section introduction (Approfondimenti)
    LIST = "list"  # one short entry per list line, "Title | date" (Coming Soon)


# Known section names (accent-free, lower case) → their kind. A heading that starts with
# one of them opens that section: "Top News gennaio-febbraio 2024" is "Top News".
KNOWN_SECTIONS: dict[str, SectionKind] = {
    "top news": SectionKind.NEWS,
    "news": SectionKind.NEWS,
    "notizie": SectionKind.NEWS,
    "in evidenza": SectionKind.NEWS,
    "approfondimenti": SectionKind.TEXT,
    "approfondimento": SectionKind.TEXT,
    "in depth": SectionKind.TEXT,
    "insights": SectionKind.TEXT,
    "coming soon": SectionKind.LIST,
    "prossimamente": SectionKind.LIST,
    "upcoming": SectionKind.LIST,
    "in arrivo": SectionKind.LIST,
}
CONTACT_HEADINGS = {"contatti", "contacts", "contact", "contact us", "contattaci", "recapiti"}
DEFAULT_SECTION = "Top News"

_TERMINAL = ".!?:;…"
_TRAILING_CLOSERS = " \t)]\"'”’»*_"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"https?://|www\.", re.IGNORECASE)
_IMAGE_CAPTION = re.compile(r"^\[?(?:image|immagine|foto|photo|figure|figura|picture)\s*[:\-–]",
                            re.IGNORECASE)
_IMAGE_SUBJECT = re.compile(
    r"^(?:(?:the|an?|this)\s+)?(?:[\w'-]+\s+){0,2}?"
    r"(?:logo|image|photo(?:graph)?|picture|illustration|graphic|banner|poster|icon|screenshot|drawing"
    r"|immagine|fotografia|foto|illustrazione|locandina|grafica)\b",
    re.IGNORECASE,
)
_VISUAL_WORDS = re.compile(
    r"\b(?:featur(?:es|ing)|depict(?:s|ing|ed)?|shows|showing|font|colou?r(?:ed)?|background|foreground"
    r"|border|sans-serif|serif|bold|blue|green|red|yellow|black|white|orange|raffigura(?:nte)?|sfondo"
    r"|colore|carattere|ritrae)\b",
    re.IGNORECASE,
)
_MARKDOWN_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<url>[^)\s]+)(?:\s+\"[^\"]*\")?\)$")


@dataclass(frozen=True)
class ImportWarning:
    line: int  # 1-based line in the document (0: the whole document)
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ParsedItem:
    title: str
    line: int
    section: str
    date_label: str | None = None
    date_line: int | None = None
    body_parts: list[str] = field(default_factory=list)
    image_url: str | None = None
    image_alt: str | None = None
    _last_plain: str = ""  # plain text of the last body paragraph, for page-break joins

    @property
    def body_md(self) -> str:
        return "\n\n".join(self.body_parts)


@dataclass
class ParsedSection:
    name: str
    kind: SectionKind
    line: int
    intro_parts: list[str] = field(default_factory=list)
    items: list[ParsedItem] = field(default_factory=list)

    @property
    def intro_md(self) -> str:
        return "\n\n".join(self.intro_parts)


@dataclass
class ParsedDocument:
    masthead: str | None = None
    period_label: str | None = None
    credit_lines: list[str] = field(default_factory=list)
    contact_lines: list[str] = field(default_factory=list)
    sections: list[ParsedSection] = field(default_factory=list)
    warnings: list[ImportWarning] = field(default_factory=list)
    known_sections: int = 0

    @property
    def items(self) -> list[ParsedItem]:
        return [item for section in self.sections for item in section.items]


@dataclass
class _Block:
    kind: str  # heading | bold | para | list | rule
    line: int
    text: str = ""  # plain text (headings, bold lines, paragraphs)
    raw: str = ""  # the Markdown source
    level: int = 0  # heading level
    entries: list[tuple[int, str, str]] = field(default_factory=list)  # list: (line, plain, raw)


def normalise_name(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^\w]+", " ", text).strip()


def source_key(title: str, occurrence: int) -> str:
    """A stable identity for an imported item: its normalised title (and which repeat of it)."""
    digest = hashlib.sha256(f"{normalise_name(title)}\x00{occurrence}".encode()).hexdigest()
    return digest[:32]


def _plain(inline: Token) -> str:
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def _bold_only(inline: Token) -> bool:
    children = [c for c in inline.children or [] if not (c.type == "text" and not c.content.strip())]
    return (
        len(children) >= 3
        and children[0].type in ("strong_open", "em_open")
        and children[-1].type in ("strong_close", "em_close")
        and not any(c.type in ("softbreak", "hardbreak") for c in children)
        and sum(1 for c in children if c.type == children[0].type) == 1
    )


_parser = MarkdownIt("commonmark", {"html": False})


def _blocks(source: str) -> list[_Block]:
    lines = source.splitlines()
    tokens = _parser.parse(source)
    blocks: list[_Block] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        start, end = token.map or (0, 0)
        raw = "\n".join(lines[start:end]).strip()
        if token.type == "heading_open":
            inline = tokens[i + 1]
            text = _plain(inline)
            if token.markup in ("-", "=") and (len(text) > 120 or text[-1:] in "."):
                # A long sentence over "---" is a paragraph followed by a rule, not a heading.
                blocks.append(_Block("para", start + 1, text, "\n".join(lines[start:end - 1]).strip()))
                blocks.append(_Block("rule", end))
            elif text:
                blocks.append(_Block("heading", start + 1, text, raw, level=int(token.tag[1])))
            i += 3
        elif token.type == "paragraph_open":
            inline = tokens[i + 1]
            text = _plain(inline)
            if text.replace("\xa0", "").strip() or "![" in raw:
                kind = "bold" if _bold_only(inline) else "para"
                blocks.append(_Block(kind, start + 1, text, raw))
            i += 3
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            block = _Block("list", start + 1, raw=raw)
            depth = 0
            j = i
            while True:
                t = tokens[j]
                if t.type in ("bullet_list_open", "ordered_list_open"):
                    depth += 1
                elif t.type in ("bullet_list_close", "ordered_list_close"):
                    depth -= 1
                    if depth == 0:
                        break
                elif t.type == "inline" and depth == 1 and t.map:
                    block.entries.append((t.map[0] + 1, _plain(t), t.content.strip()))
                j += 1
            blocks.append(block)
            i = j + 1
        elif token.type == "hr":
            blocks.append(_Block("rule", start + 1))
            i += 1
        elif token.map is not None and token.nesting >= 0 and raw:
            # Blockquotes, code, tables: kept as Markdown text.
            close = i + 1
            if token.nesting == 1:
                depth = 1
                while depth:
                    depth += tokens[close].nesting
                    close += 1
            blocks.append(_Block("para", start + 1, raw, raw))
            i = close
        else:
            i += 1
    return blocks


def _known_section(text: str) -> tuple[str, SectionKind] | None:
    normal = normalise_name(text)
    for name, kind in KNOWN_SECTIONS.items():
        # "Top News gennaio-febbraio 2024" is the section; "News from Lyon" is an item title.
        if normal != name and not normal.startswith(name + " "):
            continue
        words = len(name.split())
        original = re.sub(r"[*_#]", "", text).split()
        # The period after the name keeps its own dashes: "Top News dicembre 2024 - gennaio 2025".
        rest = " ".join(original[words:]).strip(" :|–—-")
        if normal == name or (rest and parse_date_label(rest, year=2000) is not None):
            return " ".join(original[:words]).rstrip(":"), kind
    return None


def _is_custom_section(blocks: list[_Block], i: int) -> bool:
    """A heading with a deeper heading right under it that is not a date line: a section."""
    block = blocks[i]
    if block.kind != "heading" or i + 1 >= len(blocks):
        return False
    following = blocks[i + 1]
    return (
        following.kind == "heading"
        and following.level > block.level
        and not looks_like_date_label(following.text)
        and not looks_like_date_label(block.text)
    )


def _is_period_label(text: str) -> bool:
    return not re.search(r"\b\d{1,2}\b", text) and parse_date_label(text, year=2000) is not None


def _ends_sentence(text: str) -> bool:
    stripped = text.rstrip(_TRAILING_CLOSERS)
    return not stripped or stripped[-1] in _TERMINAL


def _continues(previous_plain: str, text: str) -> bool:
    """A page break cut one paragraph in two: the first half ends mid-sentence and the
    second starts in lower case."""
    return bool(previous_plain) and not _ends_sentence(previous_plain) and text[:1].islower()


def is_image_description(text: str) -> bool:
    """A conversion tool's description of a picture ("The logo for X, featuring ...")."""
    if _IMAGE_CAPTION.match(text):
        return True
    return bool(_IMAGE_SUBJECT.match(text)) and bool(_VISUAL_WORDS.search(text))


def _is_contact(block: _Block) -> bool:
    lines = [line.strip() for line in block.raw.splitlines() if line.strip()]
    if block.kind != "para" or len(lines) < 2 or any(len(line) > 100 for line in lines):
        return False
    return bool(_EMAIL.search(block.raw) or _URL.search(block.raw))


def _lines_of(raw: str) -> list[str]:
    return [line.strip().rstrip("\\").strip() for line in raw.splitlines() if line.strip()]


def _reads_as_date(text: str) -> bool:
    return parse_date_label(text, year=2000) is not None


_LEADING_EMPHASIS = re.compile(
    r"^(?P<mark>\*\*|__|\*|_)(?P<label>[^*_]+?)(?P=mark)\s*[:|–—-]?\s*(?P<title>.*)$")
_LEADING_LABEL = re.compile(r"^(?P<label>[^:|–—]+?)\s*(?::|\||\s[–—-]\s)\s*(?P<title>.+)$")
_TRAILING_PARENS = re.compile(r"^(?P<title>.+?)\s*\((?P<label>[^()]+)\)$")
_SEPARATOR = re.compile(r"\s*(?:\||,|\s[–—-]\s)\s*")


def split_title_date(raw: str, is_date: Callable[[str], bool] = _reads_as_date) -> tuple[str, str | None]:
    """A date written on the title's own line → (title, date label); else (title, None).

    "Assemblea – 6 maggio", "Premio (fino al 30 giugno)", "Forum, 12 marzo", "20 maggio: Incontro",
    "**8-9 maggio** Laboratorio". The date must read as one (``is_date``) and a title must remain.
    """
    raw = re.sub(r"^#{1,6}\s+|\s+#+\s*$", "", raw.strip())
    plain = _strip_markup(raw)
    candidates: list[tuple[str, str]] = []
    if match := _LEADING_EMPHASIS.match(raw):
        candidates.append((match["title"], match["label"]))
    if match := _TRAILING_PARENS.match(plain):
        candidates.append((match["title"], match["label"]))
    # The longest date after a separator: "Festival – 28 marzo – 2 aprile" keeps both ends.
    candidates.extend((plain[:m.start()], plain[m.end():]) for m in _SEPARATOR.finditer(plain))
    if match := _LEADING_LABEL.match(plain):
        candidates.append((match["title"], match["label"]))
    for title, label in candidates:
        title, label = _strip_markup(title).strip(" :|–—-"), _strip_markup(label).strip(" |")
        if re.search(r"[^\W\d_]", title) and label and is_date(label):
            return title, label
    return plain, None


def _split_entry(plain: str, raw: str) -> tuple[str, str | None]:
    """ "Delegazione di studenti di Nagoya | marzo" → title and date label; also "marzo | Delegazione",
    "Delegazione – marzo", "Delegazione (marzo)"."""
    source = raw if "|" in raw else plain
    if "|" in source:
        title, _, label = source.rpartition("|")
        title, label = _strip_markup(title), _strip_markup(label)
        if looks_like_date_label(title) and not looks_like_date_label(label):
            title, label = label, title  # the date written first
        return title, label or None
    return split_title_date(raw, looks_like_date_label)


def _strip_markup(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"(\*\*|__|[*_`])", "", text)).strip()


_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LINE_END_BREAK = re.compile(r"[ \t]*<br\s*/?>[ \t]*$", re.IGNORECASE | re.MULTILINE)
_INLINE_BREAK = re.compile(r"[ \t]*<br\s*/?>[ \t]*", re.IGNORECASE)


def clean_source(source: str) -> str:
    """Remove what converters leave behind and Markdown would show as text, keeping every
    line where it was (warnings quote line numbers): HTML comments, ``<br>`` tags, CRs."""
    source = source.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    source = _HTML_COMMENT.sub(lambda m: "\n" * m[0].count("\n"), source)
    source = _LINE_END_BREAK.sub("  ", source)  # a Markdown hard break
    # A <br> inside a line would need a new line (and shift the numbering): a space reads as well.
    return _INLINE_BREAK.sub(" ", source)


def _reference_definitions(source: str) -> dict[str, str]:
    """Reference-style link definitions (``[1]: https://...``), by normalised label."""
    env: dict[str, dict[str, dict[str, str]]] = {}
    _parser.parse(source, env)
    return {label: ref["href"] for label, ref in env.get("references", {}).items()}


def _with_definitions(md: str, references: dict[str, str]) -> str:
    """``md`` followed by the definitions of the reference links it uses: a definition is
    usually at the end of the document, far from the item that is stored on its own."""
    used = []
    for label in re.findall(r"\]\[([^\]]+)\]|\[([^\]]+)\](?!\()", md):
        name = label[0] or label[1]
        key = " ".join(name.split()).upper()
        if key in references and name not in used:
            used.append(name)
    if not used:
        return md
    definitions = "\n".join(f"[{name}]: {references[' '.join(name.split()).upper()]}" for name in used)
    return f"{md}\n\n{definitions}"


def parse_document(source: str) -> ParsedDocument:
    """Sections, items and edition metadata of a newsletter document; never raises on
    odd content, but reports it in ``warnings`` with line numbers."""
    doc = ParsedDocument()
    source = clean_source(source)
    blocks = _blocks(source)

    # The contact footer: short multi-line paragraphs with an address, at the very end,
    # or everything under a "Contatti" heading.
    end = len(blocks)
    for i, block in enumerate(blocks):
        if block.kind in ("heading", "bold") and normalise_name(block.text) in CONTACT_HEADINGS:
            contact_blocks, end = blocks[i + 1:], i
            for contact in contact_blocks:
                doc.contact_lines.extend(_lines_of(contact.raw))
            break
    else:
        while end > 0 and _is_contact(blocks[end - 1]):
            end -= 1
        for contact in blocks[end:]:
            doc.contact_lines.extend(_lines_of(contact.raw))
    blocks = blocks[:end]

    # The front matter: everything before the first section heading.
    first_section = next(
        (i for i, b in enumerate(blocks)
         if (b.kind == "heading" and (_known_section(b.text) or _is_custom_section(blocks, i)))
         or (b.kind == "bold" and _known_section(b.text))),
        None,
    )
    if first_section is None:
        # No section headings: the masthead is a level-1 heading over a period label.
        first_section = 0
        if blocks and blocks[0].kind == "heading" and blocks[0].level == 1:
            first_section = 1
            if len(blocks) > 1 and blocks[1].kind in ("heading", "bold") and _is_period_label(blocks[1].text):
                first_section = 2
            while first_section < len(blocks) and blocks[first_section].kind == "para":
                first_section += 1
    # A heading with text under it is an item, even before the first section heading (one
    # that is not recognised, say): the front matter never swallows news.
    masthead_seen = False
    for i, block in enumerate(blocks[:first_section]):
        if block.kind != "heading":
            continue
        if block.level == 1 and not masthead_seen:
            masthead_seen = True
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        if _is_period_label(block.text) or following is None:
            continue
        # A short line under a heading may be a credit ("a cura di ..."); a body is longer.
        body_follows = following.kind == "para" and len(following.text) > 100
        date_follows = following.kind in ("heading", "bold") and looks_like_date_label(following.text)
        if body_follows or date_follows:
            first_section = i
            break
    for block in blocks[:first_section]:
        if block.kind == "heading" and doc.masthead is None and block.level == 1:
            doc.masthead = block.text
        elif block.kind in ("heading", "bold") and doc.period_label is None and _is_period_label(block.text):
            doc.period_label = block.text
        elif block.kind in ("para", "bold"):
            doc.credit_lines.extend(_strip_markup(line) for line in _lines_of(block.raw))
        elif block.kind == "heading":
            doc.warnings.append(ImportWarning(block.line, f"heading {block.text!r} before the first "
                                              "section was ignored."))

    section: ParsedSection | None = None
    item: ParsedItem | None = None
    title_just_seen = False
    for i in range(first_section, len(blocks)):
        block = blocks[i]
        known = _known_section(block.text) if block.kind in ("heading", "bold") else None
        if known or (block.kind == "heading" and _is_custom_section(blocks, i)):
            _check_text(doc, item)
            name, kind = known or (block.text, SectionKind.NEWS)
            doc.known_sections += bool(known)
            section = ParsedSection(name, kind, block.line)
            doc.sections.append(section)
            item, title_just_seen = None, False
            continue
        if section is None:
            section = ParsedSection(DEFAULT_SECTION, SectionKind.NEWS, block.line)
            doc.sections.append(section)

        if section.kind == SectionKind.TEXT:
            if block.kind in ("heading", "bold"):
                section.intro_parts.append(f"**{_strip_markup(block.text)}**")
            elif block.kind in ("para", "list"):
                section.intro_parts.append(block.raw)
            continue

        if block.kind in ("heading", "bold"):
            if item is not None and title_just_seen and looks_like_date_label(block.text):
                item.date_label, item.date_line = _strip_markup(block.text), block.line
                title_just_seen = False
                continue
            _check_text(doc, item)
            title, label = split_title_date(block.raw if block.kind == "bold" else block.raw.splitlines()[0])
            item = ParsedItem(title, block.line, section.name, label, block.line if label else None)
            section.items.append(item)
            title_just_seen = True
            continue
        title_just_seen = False

        if block.kind == "rule":
            if item is not None:
                item._last_plain = ""  # nothing joins across a rule
            continue
        if block.kind == "list":
            if item is None and (section.kind == SectionKind.LIST or any("|" in e[2] for e in block.entries)):
                for line, plain, raw in block.entries:
                    title, label = _split_entry(plain, raw)
                    entry = ParsedItem(title, line, section.name, label, line if label else None)
                    section.items.append(entry)
            elif item is not None:
                item.body_parts.append(block.raw)
                item._last_plain = ""
            else:
                section.intro_parts.append(block.raw)
            continue

        # A paragraph.
        picture = _MARKDOWN_IMAGE.match(block.raw)
        if picture or is_image_description(block.text):
            alt = picture["alt"] if picture else block.text
            if item is not None and item.image_alt is None:
                item.image_alt = alt
                item.image_url = picture["url"] if picture else None
                note = "kept as the image of" if picture else "kept as image alt text of"
                doc.warnings.append(ImportWarning(block.line, f"image description {note} {item.title!r}."))
            else:
                doc.warnings.append(ImportWarning(block.line, "image description dropped."))
            continue
        if item is None:
            section.intro_parts.append(block.raw)
            continue
        if item.body_parts and _continues(item._last_plain, block.text):
            item.body_parts[-1] = item.body_parts[-1].rstrip() + " " + block.raw.lstrip()
            doc.warnings.append(ImportWarning(block.line, f"joined a paragraph of {item.title!r} "
                                              "cut by a page break."))
            item._last_plain = block.text
        else:
            item.body_parts.append(block.raw)
            item._last_plain = block.text
    _check_text(doc, item)
    _finish(doc, _reference_definitions(source))
    return doc


def _finish(doc: ParsedDocument, references: dict[str, str]) -> None:
    for section in doc.sections:
        if references and section.intro_parts:
            section.intro_parts = [_with_definitions(section.intro_md, references)]
        for item in section.items:
            if references and item.body_parts:
                item.body_parts = [_with_definitions(item.body_md, references)]


def _check_text(doc: ParsedDocument, item: ParsedItem | None) -> None:
    if item is not None and not item.body_parts:
        doc.warnings.append(ImportWarning(item.line, f"item {item.title!r} has no text."))
