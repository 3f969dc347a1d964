#!/bin/sh
# System packages some tests drive for real: headless Chromium (browser pages against a live
# server), bubblewrap (the command sandbox) and PostgreSQL (the tests start a throwaway
# cluster with its initdb and pg_ctl). Installed with apt when running as root and missing;
# otherwise those tests skip, or fail where SESSIOND_TEST_STRICT=1 / SESSIOND_REQUIRE_PG=1
# (CI) says so.
set -u
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages for the tests:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null \
        || echo "could not install$missing; the tests that need them will skip or fail"
else
    echo "not installed:$missing (tests that need them skip; install them to run those tests)"
fi
exit 0
