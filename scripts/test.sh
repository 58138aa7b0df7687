#!/usr/bin/env bash
# Quick start, command 2: set up and run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k dispatch).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "test,postgres"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest selected no tests (exit 5); nothing failed."
    status=0
fi
exit "$status"
