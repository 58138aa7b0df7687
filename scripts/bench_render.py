#!/usr/bin/env python3
"""Benchmark: render an edition in-process, warm (median of several runs).

Baselines measured in the same run: the Jinja2 step alone, the MJML compile alone and
premailer alone, so the full figure can be read against its parts.

    .venv/bin/python scripts/bench_render.py            # the sample edition if available
    .venv/bin/python scripts/bench_render.py --synthetic --runs 50

The sample edition is read from ../shared/seed/ and imported into a throw-away SQLite
database (needs the editorial stage); --synthetic uses a generated 30-item edition.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.render_fixtures

from wip_mailer.assemble import EditionContext  # noqa: E402
from wip_mailer.render import (  # noqa: E402
    HTML_TEMPLATE,
    TEXT_TEMPLATE,
    clear_caches,
    compile_mjml,
    email_environment,
    inline_css,
    render_edition,
    template_context,
)
from wip_mailer.settings import Settings  # noqa: E402
from wip_mailer.templating import render_template  # noqa: E402

SEED = ROOT.parent / "shared" / "seed" / "work-in-progress-2024-01-gennaio-febbraio.md"


def sample_context(folder: Path) -> EditionContext:
    from wip_mailer import db, editorial, intake
    from wip_mailer.assemble import assemble_edition

    engine = db.create_database(f"sqlite:///{folder / 'bench.db'}")
    title = next(line[3:].strip() for line in SEED.read_text("utf-8").splitlines() if line.startswith("## "))
    with db.session_scope(engine) as session:
        editorial.create_edition(session, "2024-01", title)
        intake.import_document(session, SEED, "2024-01")
        editorial.approve_all(session, "2024-01", by="bench")
    with db.session_scope(engine) as session:
        return assemble_edition(session, "2024-01")


def timed(step: Callable[[], object], runs: int) -> tuple[float, float]:
    for _ in range(3):  # warm caches (templates, CSS parsing) first
        step()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--synthetic", action="store_true", help="use a generated 30-item edition")
    args = parser.parse_args()
    settings = Settings()

    with tempfile.TemporaryDirectory() as folder:
        if args.synthetic or not SEED.exists():
            from tests.render_fixtures import synthetic_edition

            context, label = synthetic_edition(30), "synthetic 30-item edition"
        else:
            try:
                context, label = sample_context(Path(folder)), f"sample edition {SEED.name}"
            except ImportError as exc:
                print(f"The sample cannot be imported here ({exc}); use --synthetic.", file=sys.stderr)
                return 2

    items = sum(len(section.items) for section in context.sections)
    env = email_environment(settings)
    values = template_context(context, settings, personal=True)
    mjml_source = render_template(env, HTML_TEMPLATE, values)
    compiled = compile_mjml(mjml_source)
    rendered = render_edition(context, settings)

    print(f"{label}: {items} items; HTML {rendered.html_bytes / 1024:.1f} KiB, "
          f"text {len(rendered.text.encode()) / 1024:.1f} KiB; median (min) of {args.runs} warm runs")
    rows = [
        ("baseline: Jinja2 → MJML source", lambda: render_template(env, HTML_TEMPLATE, values)),
        ("baseline: mjml compile alone", lambda: compile_mjml(mjml_source)),
        ("baseline: premailer alone", lambda: inline_css(compiled)),
        ("baseline: text twin alone", lambda: render_template(env, TEXT_TEMPLATE, values)),
        ("render_edition (all of it)", lambda: render_edition(context, settings)),
        ("render_edition, caches cleared", lambda: (clear_caches(), render_edition(context, settings))),
    ]
    for name, step in rows:
        median, fastest = timed(step, args.runs)
        print(f"  {name:<34} {median:7.2f} ms  ({fastest:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
