#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real (servers it starts on loopback,
# tools that build the offline Docker images, the headless browser of the dashboard test, the tools of container faults).
# Idempotent: does nothing when every command is already there. Needs root and apt-get; elsewhere it says what is missing and the tests that
# need it skip with that reason.
set -euo pipefail

# command -> Debian package that provides it
declare -A NEEDED=(
    [redis-server]=redis-server
    [debootstrap]=debootstrap
    [chromium]=chromium
    [docker-compose]=docker-compose
    [nsenter]=util-linux
    [iptables-restore]=iptables
)

missing=()
for cmd in "${!NEEDED[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]} (install them; tests that need them will skip)" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts redis-server as a service on install; the tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
service redis-server stop >/dev/null 2>&1 || true
