#!/usr/bin/env bash
# The main job: installs what is missing, then runs main.py (database up,
# migrations applied, admin served). Arguments are passed to main.py.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python main.py "$@"
