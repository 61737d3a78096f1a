#!/usr/bin/env bash
# Debian packages the test suite needs beyond Python (the README's curl example
# is run as printed). Installs only what is missing; needs root and apt-get.
set -euo pipefail
needed=()
command -v curl >/dev/null 2>&1 || needed+=(curl)
command -v promtool >/dev/null 2>&1 || needed+=(prometheus)  # promtool: the alert rules are checked and tested
command -v chromium >/dev/null 2>&1 || needed+=(chromium)  # the dashboard is tested in a headless browser
command -v redis-server >/dev/null 2>&1 || needed+=(redis-server)  # the stream consumer is tested against a real Redis
command -v haproxy >/dev/null 2>&1 || needed+=(haproxy)  # deploy/haproxy/turnout.cfg is tested in front of a server
[ ${#needed[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${needed[*]} (install them with your package manager)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}"
