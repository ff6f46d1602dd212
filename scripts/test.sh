#!/usr/bin/env bash
# The whole test suite: installs what is missing (the pinned Python packages,
# Debian's chromium for the browser tests and Debian's pgbouncer for the
# PgBouncer tests), type-checks the package with mypy, then runs pytest against
# a real PostgreSQL (the embedded one, or DATABASE_URL's server). Arguments are
# passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test

# Installs Debian's package $1 (as root, or with password-less sudo; the
# package lists are updated first when the package is not found), or exits
# with $2, which says what to do instead.
install_debian_package() {
    local apt_get
    if [ "$(id -u)" = 0 ]; then
        apt_get=(apt-get)
    elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
        apt_get=(sudo -n apt-get)
    else
        echo "$2" >&2
        exit 1
    fi
    echo "Installing Debian's $1 for the tests..."
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "$1" > /dev/null \
        || { DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" update -qq \
             && DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "$1" > /dev/null; }
}

# The browser tests drive Chromium (EVERYSKILL_CHROMIUM, by default Debian's
# /usr/bin/chromium) through Playwright.
if [ -n "${EVERYSKILL_CHROMIUM:-}" ] && [ ! -x "$EVERYSKILL_CHROMIUM" ]; then
    echo "EVERYSKILL_CHROMIUM is $EVERYSKILL_CHROMIUM, which is not an executable." >&2
    exit 1
fi
chromium="${EVERYSKILL_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    install_debian_package chromium \
        "The browser tests need Chromium at $chromium: install Debian's package (apt-get install chromium) or set EVERYSKILL_CHROMIUM."
fi

# The PgBouncer tests start their own pgbouncer (on PATH, or Debian's
# /usr/sbin/pgbouncer) in front of the test server; the package's own service
# is left alone.
if ! command -v pgbouncer > /dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    install_debian_package pgbouncer \
        "The PgBouncer tests need pgbouncer: install Debian's package (apt-get install pgbouncer)."
fi

.venv/bin/mypy
exec .venv/bin/pytest "$@"
