#!/usr/bin/env bash
# Installs what some tests drive from Debian's packages when it is missing
# and this machine can (root, apt-get): Chromium (the HTML reports'
# rendering tests) and Prometheus with promtool (alert rules, their unit
# tests, and a real server scraping the suite). Best effort: a test whose
# tool is missing skips and says why, except under CI=true.
set -u
missing=()
command -v chromium >/dev/null || [ -n "${EAP_CHROMIUM:-}" ] || missing+=(chromium)
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} for the tests (apt-get)"
  timeout 600 apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { timeout 120 apt-get update -q >/dev/null 2>&1 \
         && timeout 600 apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
    || echo "${missing[*]} could not be installed; the tests that need them will skip"
fi
exit 0
