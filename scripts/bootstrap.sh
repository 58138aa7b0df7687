# Sourced by quickstart.sh and test.sh: make .venv with the project installed.
# Usage: source scripts/bootstrap.sh EXTRAS   (e.g. "" or "test,postgres")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "wip-mailer needs Python 3.11 or newer; none was found on PATH." >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PYTHON="$(pick_python)"
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        # Debian ships venv support separately.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "Installing Debian's python3-venv (needed to create .venv)..."
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            echo "Python's venv module is missing: run 'sudo apt-get install python3-venv' first." >&2
            exit 1
        fi
    fi
    echo "Creating the virtual environment in .venv ..."
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

EXTRAS="${1:-}"
echo "Installing wip-mailer${EXTRAS:+ [$EXTRAS]} into .venv ..."
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" 2>&1 \
    | grep -v "^WARNING: Location 'file:" || true
"$VENV/bin/python" -c 'import wip_mailer' # fail here, clearly, if the install did not work
