#!/usr/bin/env bash
# Quick start, command 1: set up and run the main job on embedded defaults.
# Creates .venv, starts a clean demo/ (SQLite + .env), runs the embedded SMTP
# server, loads the example edition and subscribers, checks, renders and sends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh ""
ROOT="$(pwd)"
WIP="$ROOT/.venv/bin/wip-mailer"
DEMO="$ROOT/demo"
SLUG=2026-11

step() { printf '\n==> %s\n' "$*"; }

# A clean demo every run: keep only its .env (and so its secret key).
mkdir -p "$DEMO"
cd "$DEMO"
rm -rf wip-mailer.db wip-mailer.db-wal wip-mailer.db-shm outbox archive preview.html preview.txt
step "wip-mailer init"
"$WIP" init --demo

# The embedded SMTP server, on 1025 unless that port is taken.
PORT="$("$ROOT/.venv/bin/python" - <<'PY'
import socket
for port in [1025, *range(2525, 2600)]:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
PY
)"
export WIP_MAILER_SMTP_HOST=127.0.0.1 WIP_MAILER_SMTP_PORT="$PORT"
step "wip-mailer dev-smtp --port $PORT --maildir outbox  (in the background)"
"$WIP" dev-smtp --port "$PORT" --maildir outbox > dev-smtp.log 2>&1 &
SMTP_PID=$!
trap 'kill "$SMTP_PID" 2>/dev/null || true; wait "$SMTP_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q Listening dev-smtp.log 2>/dev/null && break; sleep 0.1; done
grep -q Listening dev-smtp.log || { cat dev-smtp.log >&2; exit 1; }

step "Editorial: create the edition, import the example document, approve its items"
"$WIP" editions create "$SLUG" --title "Novembre-Dicembre 2026" --start 2026-11-01 --end 2026-12-31
"$WIP" import "$ROOT/examples/edition-$SLUG.md" --edition "$SLUG"
"$WIP" items approve --all --edition "$SLUG" --by quickstart

step "Audience: lists from subscribers/lists.toml, example subscribers from a CSV"
"$WIP" lists sync "$ROOT/subscribers/lists.toml"
"$WIP" subscribers import "$ROOT/subscribers/example-import.csv" --list partner-internazionali

step "Pre-flight check and preview"
"$WIP" check "$SLUG"
"$WIP" preview "$SLUG" --out preview.html --text preview.txt

step "Send: one personal message per subscriber to the embedded SMTP server"
"$WIP" send "$SLUG" --list partner-internazionali --yes
"$WIP" campaigns list

step "Web archive of sent editions"
"$WIP" archive build archive

echo
echo "Done. Look at:"
echo "  $DEMO/preview.html     the email as a subscriber sees it (open it in a browser)"
echo "  $DEMO/preview.txt      its plain-text twin"
echo "  $DEMO/outbox/new/      the messages the embedded SMTP server received"
echo "  $DEMO/dev-smtp.log     one line per received message"
echo "  $DEMO/archive/index.html  the web archive (\"view in browser\" copies and an Atom feed)"
echo "Next: .venv/bin/wip-mailer --help, or serve the unsubscribe pages and the archive with"
echo "      (cd demo && ../.venv/bin/wip-mailer serve --archive archive)   at http://127.0.0.1:8000"
