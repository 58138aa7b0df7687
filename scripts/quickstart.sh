#!/usr/bin/env bash
# Quick start, command 1: set up and run the main job on embedded defaults.
# Creates .venv, initialises demo/ (SQLite + .env), starts the embedded SMTP
# server, loads the example edition and subscribers, renders and sends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh ""
ROOT="$(pwd)"
WIP="$ROOT/.venv/bin/wip-mailer"
DEMO="$ROOT/demo"
mkdir -p "$DEMO"
cd "$DEMO"

"$WIP" init

PORT="${WIP_MAILER_DEMO_SMTP_PORT:-1025}"
export WIP_MAILER_SMTP_HOST=127.0.0.1 WIP_MAILER_SMTP_PORT="$PORT"
"$WIP" dev-smtp --port "$PORT" --maildir outbox > dev-smtp.log 2>&1 &
SMTP_PID=$!
trap 'kill "$SMTP_PID" 2>/dev/null || true; wait "$SMTP_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q Listening dev-smtp.log 2>/dev/null && break; sleep 0.1; done
grep -q Listening dev-smtp.log || { cat dev-smtp.log >&2; exit 1; }

echo
echo "Done. Look at:"
echo "  $DEMO/outbox/new/      the messages the embedded SMTP server received"
echo "  $DEMO/dev-smtp.log     one line per received message"
