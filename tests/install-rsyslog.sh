#!/usr/bin/env bash
# Install Debian's rsyslog with its GnuTLS network driver and its RELP input (rsyslog-relp): the syslog-over-TLS and
# RELP-over-TLS receivers of the sink tests (tests/test_sinks_delivery.py starts its own rsyslogd on loopback with a
# config file in pytest's tmp directory).
# Idempotent; needs root (as on CI and the developers' machines) the first time.
set -euo pipefail
if command -v rsyslogd >/dev/null 2>&1 && ls /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/*/rsyslog/imrelp.so \
    >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "rsyslog is missing and this user cannot apt-get install it; the syslog sink tests will not run" >&2
    exit 0
fi
started=$SECONDS
echo "==> installing Debian's rsyslog, rsyslog-gnutls and rsyslog-relp for the syslog sink tests"
apt-get update -qq
# --no-install-recommends and no service start: the tests run their own rsyslogd in the foreground.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls rsyslog-relp \
    >/dev/null
echo "==> rsyslog installed in $((SECONDS - started)) s"
