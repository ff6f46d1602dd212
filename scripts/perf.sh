#!/usr/bin/env bash
# The performance benchmarks: installs what is missing, then runs
# `python -m perf` (a scratch database on the embedded PostgreSQL, or on
# DATABASE_URL's server; data built at scale; figures printed and written
# to perf/results/). Arguments are passed to it, e.g. --scale quick.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh perf
exec .venv/bin/python -m perf "$@"
