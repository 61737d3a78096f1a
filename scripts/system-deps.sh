#!/usr/bin/env bash
# The programs the test suite runs beyond Python, installed without ever starting
# or enabling a system service: the tests start their own redis-server, HAProxy
# and Chromium on private ports, and only run promtool.
#
#   scripts/system-deps.sh [--dry-run] BIN
#
# BIN: where to put programs taken out of a package (.venv/bin). --dry-run prints
# what would be installed and taken out, and changes nothing.
#
# Packages that ship a service (redis-server, prometheus, haproxy) are not
# installed: their program is copied out of the package into BIN, and only its
# libraries are installed. Installing needs root and apt-get; without them this
# names what is missing and exits 0, and the test run leaves out (and fails on)
# the tests that need it, running everything else.
set -euo pipefail
dry_run=0
[ "${1:-}" = --dry-run ] && dry_run=1 && shift
bin=$(realpath "${1:?usage: system-deps.sh [--dry-run] BIN}")
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$bin/$1" ]; }

plain=()     # packages with no service: installed as they are
extract=()   # package:path-inside-it, taken out into BIN
have curl || plain+=(curl)               # the README's curl examples are run as printed
have openssl || plain+=(openssl)         # and its demo certificates are made with openssl
have chromium || plain+=(chromium)       # the dashboard is tested in a headless browser
have redis-server || plain+=(redis-tools)  # redis-tools holds the server binary, without the service
have promtool || extract+=(prometheus:usr/bin/promtool)  # the alert rules are checked and tested
have haproxy || extract+=(haproxy:usr/sbin/haproxy)      # deploy/haproxy/turnout.cfg is tested in front of a server
[ ${#plain[@]} -eq 0 ] && [ ${#extract[@]} -eq 0 ] && exit 0

libraries() {  # what a program taken out of its package links against, never its adduser or init helpers
  apt-cache depends --no-recommends --no-suggests --no-pre-depends "$1" |
    awk '/^  Depends: lib/ && !/libjs-/ {print $2}' | sort -u
}
if [ "$dry_run" -eq 1 ]; then
  for item in "${extract[@]}"; do plain+=($(libraries "${item%%:*}")); done
  echo "install: ${plain[*]}"
  echo "take out: ${extract[*]}"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  missing=("${plain[@]}")
  for item in "${extract[@]}"; do missing+=("${item%%:*}"); done
  echo "missing system packages: ${missing[*]}" >&2
  echo "  install them as root (sudo scripts/system-deps.sh $bin); the tests that need them are left out, and the run fails" >&2
  exit 0
fi

# A package's maintainer scripts may still try to start something: policy-rc.d
# (Debian's switch for image builds) refuses every start while this runs.
policy=/usr/sbin/policy-rc.d
work=$(mktemp -d)
made_policy=0
cleanup() { rm -rf "$work"; [ "$made_policy" -eq 0 ] || rm -f "$policy"; }
trap cleanup EXIT
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

for item in "${extract[@]}"; do plain+=($(libraries "${item%%:*}")); done
[ ${#plain[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${plain[@]}"
if ! have redis-server && command -v redis-check-rdb >/dev/null 2>&1; then
  # Debian's redis-server package is this same binary under the name redis-server (it picks its mode by name)
  ln -sf "$(command -v redis-check-rdb)" "$bin/redis-server"
fi

for item in "${extract[@]}"; do
  package=${item%%:*} path=${item#*:}
  (cd "$work" && apt-get download -qq "$package" 2>/dev/null)
  dpkg-deb -x "$work/${package}"_*.deb "$work/$package"
  install -m 0755 "$work/$package/$path" "$bin/$(basename "$path")"
done
