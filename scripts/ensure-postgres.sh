#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl) are on this machine, so the store
# tests can start a throw-away server. Installs Debian's `postgresql` package when they are
# missing and we are root; otherwise says what to do. Under CI=true a missing server is an
# error, because CI must run the store tests on both SQLite and PostgreSQL.
set -euo pipefail

have_postgres() {
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        return 0
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then
            return 0
        fi
    done
    return 1
}

if have_postgres; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL server binaries not found; installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Only the binaries are used: the tests start their own server in a temporary directory.
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    if have_postgres; then
        exit 0
    fi
    echo "ensure-postgres: installed postgresql, but initdb/pg_ctl are still missing" >&2
    exit 1
fi

message="ensure-postgres: PostgreSQL server binaries (initdb, pg_ctl) not found and not root to install them"
case "${CI:-}" in
    1 | true | TRUE | True | yes)
        echo "$message: CI needs them (apt-get install postgresql)" >&2
        exit 1
        ;;
esac
echo "$message: the PostgreSQL half of the store tests will be SKIPPED (apt-get install postgresql)" >&2
exit 0
