#!/usr/bin/env bash
# The whole test suite: installs what is missing (the pinned Python packages,
# and Debian's chromium for the browser tests), type-checks the package with
# mypy, then runs pytest against a real PostgreSQL (the embedded one, or
# DATABASE_URL's server). Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test

# The browser tests drive Chromium (EVERYSKILL_CHROMIUM, by default Debian's
# /usr/bin/chromium) through Playwright.
if [ -n "${EVERYSKILL_CHROMIUM:-}" ] && [ ! -x "$EVERYSKILL_CHROMIUM" ]; then
    echo "EVERYSKILL_CHROMIUM is $EVERYSKILL_CHROMIUM, which is not an executable." >&2
    exit 1
fi
chromium="${EVERYSKILL_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt_get=(apt-get)
    elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
        apt_get=(sudo -n apt-get)
    else
        echo "The browser tests need Chromium at $chromium: install Debian's package" \
             "(apt-get install chromium) or set EVERYSKILL_CHROMIUM." >&2
        exit 1
    fi
    echo "Installing Debian's chromium for the browser tests..."
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium > /dev/null \
        || { DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" update -qq \
             && DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium > /dev/null; }
fi

.venv/bin/mypy
exec .venv/bin/pytest "$@"
