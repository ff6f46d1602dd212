#!/usr/bin/env bash
# The whole test suite: installs what is missing, type-checks the package
# with mypy, then runs pytest against a real PostgreSQL (the embedded one, or
# DATABASE_URL's server). Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/mypy
exec .venv/bin/pytest "$@"
