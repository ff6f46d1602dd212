#!/usr/bin/env bash
# Creates the project's virtual environment in .venv and installs the pinned
# dependencies into it. Safe to run again: it reinstalls only when
# pyproject.toml or constraints.txt changed since the last install.
#
# Usage: scripts/setup.sh [extra]   (extra: "test" adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

extra="${1:-}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "EverySkill needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi

stamp=".venv/.everyskill-installed${extra:+-$extra}"
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

target="."
[ -n "$extra" ] && target=".[$extra]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --constraint constraints.txt --editable "$target"
echo "$wanted" > "$stamp"
