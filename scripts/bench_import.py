"""Benchmark: import 10 newsletter documents of 30 items each into a fresh SQLite database.

Synthetic documents in the sample's format (titles at several heading levels and in
bold, date lines as headings or bold, placeholder links, page-break cuts, image
descriptions, Approfondimenti, Coming Soon, contact footer) are written to a temp dir.
Each run times, in the same process and on the same documents:

  parse only      parse_document() on the 10 files (the baseline: no database)
  first import    import_document() into 10 fresh editions (parse + create 300 items)
  re-import       the same 10 files again (parse + compare: everything unchanged)

Usage: .venv/bin/python scripts/bench_import.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from wip_mailer import db, editorial
from wip_mailer.intake import import_document, parse_document
from wip_mailer.intake.importer import read_document

MONTHS = ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre",
          "ottobre", "novembre", "dicembre"]
DOCUMENTS = 10
ITEMS = 30


def _item(doc: int, n: int, month: int) -> str:
    name, following = MONTHS[month], MONTHS[(month + 1) % 12]
    title = f"Progetto di esempio {doc}-{n}: incontro tra città partner numero {n}"
    date_label = [
        f"{n % 27 + 1}-{n % 27 + 2} {name}", f"{n % 28 + 1} {name}", f"{n % 20 + 5} {name} - 2 {following}",
        f"Fino al {n % 28 + 1} {following}", f"A partire dal {n % 28 + 1} {name}", f"{name} {following}",
        f"{n % 10 + 1} e {n % 10 + 15} {name}",
    ][n % 7]
    heading = ["### {t}", "## {t}", "**{t}**", "## **{t}**"][n % 4].format(t=title)
    date_line = ["#### {d}", "**{d}**", "**{d}**", "### **{d}**"][n % 4].format(d=date_label)
    body = (
        f"La Città partecipa all'incontro del progetto [ESEMPIO{n}](#) dedicato allo scambio di buone "
        "pratiche tra amministrazioni locali, con workshop, visite studio e un confronto sulle politiche "
        f"urbane. Il programma completo è su <https://www.example.org/progetti/{doc}/{n}> e sarà aggiornato"
    )
    tail = " con i materiali prodotti durante le giornate di lavoro."
    parts = [heading, date_line, body + tail]
    if n % 5 == 0:  # a paragraph cut by a page break
        parts = [heading, date_line, body, "", "", tail.strip()]
    if n % 9 == 0:
        parts.append("The logo for ESEMPIO, featuring the text in a bold font on a blue background.")
    return "\n\n".join(parts) + "\n\n" + ("---\n\n" if n % 3 else "\n\n")


def synthetic_document(doc: int) -> str:
    month = (2 * doc) % 12
    head = (
        f"# Work in Progress\n\n## {MONTHS[month].title()}-{MONTHS[month + 1].title()} 2030\n\n"
        "a cura dell'Ufficio Esempio  \nRelazioni Internazionali\n\n"
        f"## Top News {MONTHS[month]}-{MONTHS[month + 1]} 2030\n\n"
    )
    items = "".join(_item(doc, n, month) for n in range(1, ITEMS + 1))
    tail = (
        "# Approfondimenti\n\nI resoconti sono su [www.example.org](https://www.example.org).\n\n"
        "## Delegazioni ricevute:\n\n- Delegazione A\n- Delegazione B\n- Delegazione C\n\n"
        f"# Coming Soon\n\n- Missione in una città partner | {MONTHS[(month + 2) % 12]}\n\n"
        "Ufficio Esempio  \nVia dell'Esempio 1  \n[info@example.org](mailto:info@example.org)\n"
    )
    return head + items + tail


def one_run(folder: Path, paths: list[Path], run: int) -> tuple[float, float, float]:
    start = time.perf_counter()
    for path in paths:
        parse_document(read_document(path))
    parse_only = time.perf_counter() - start

    engine = db.create_database(f"sqlite:///{folder / f'bench-{run}.db'}")  # schema set-up not timed
    with db.session_scope(engine) as session:
        for i in range(len(paths)):
            editorial.create_edition(session, f"2030-{i:02d}", f"Edizione {i}",
                                     date(2030, 1, 1), date(2030, 12, 31))

    def import_all() -> float:
        start = time.perf_counter()
        for i, path in enumerate(paths):
            with db.session_scope(engine) as session:
                report = import_document(session, path, f"2030-{i:02d}")
                assert report.total == ITEMS + 1, report.summary()  # 30 news + 1 Coming Soon entry
        return time.perf_counter() - start

    first = import_all()
    again = import_all()
    engine.dispose()
    return parse_only, first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for doc in range(DOCUMENTS):
            path = folder / f"edition-{doc}.md"
            path.write_text(synthetic_document(doc), encoding="utf-8")
            paths.append(path)
        one_run(folder, paths, -1)  # warm-up: imports, caches
        results = [one_run(folder, paths, run) for run in range(args.runs)]
    parse_only, first, again = (statistics.median(r[k] for r in results) for k in range(3))
    print(f"{DOCUMENTS} documents x {ITEMS} items, median of {args.runs} runs:")
    print(f"  parse only (baseline)     {parse_only:.3f} s")
    print(f"  first import (parse+store) {first:.3f} s  ({first / parse_only:.1f}x parse only)")
    print(f"  re-import (all unchanged)  {again:.3f} s  ({again / parse_only:.1f}x parse only)")
    print(f"  target: first import under 1 s -> {'met' if first < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
