#!/usr/bin/env bash
# make docker-demo: the orders chaos suite against docker/compose.yaml (service, inventory and
# the chaos server as containers). Brings the stack up under a unique project name, runs the
# suite with the same gates as `make demo`, and takes the stack down again (also on failure or
# Ctrl-C). Uses `docker compose` when the plugin is there, else docker-compose (v1).
# Needs the image: `make image` (the Makefile target runs it first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
export SYNAPSE_IMAGE=${SYNAPSE_IMAGE:-synapse-chaos:$VERSION}
# Our run id (see chaos/docker/labels.py): a stack left by a killed demo is reaped by the next run.
machine=$(head -c 12 /etc/machine-id 2>/dev/null || hostname | tr -cd 'a-z0-9' | head -c 12)
export SYNAPSE_RUN_ID="$machine.$$.$(awk '{print $22}' /proc/$$/stat).de30"
project="synapse-demo-$$"
compose() { "${COMPOSE[@]}" -p "$project" -f docker/compose.yaml "$@"; }
trap 'compose down -v --remove-orphans --timeout 1 >/dev/null 2>&1 || true' EXIT

compose up -d --no-build
api=$(compose port chaos 8474)
orders=$(compose port orders 8080)
echo "docker-demo: chaos API http://$api, orders http://$orders (project $project)"
# The service answers once its container has started.
"$PY" - "$orders" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(f"http://{sys.argv[1]}/breakers", timeout=1).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("docker-demo: the orders container did not answer within 30 s")
        time.sleep(0.2)
PY
SYNAPSE_ORDERS_URL="http://$orders" "$PY" -m pytest examples/orders --synapse-chaos \
    --synapse-toxiproxy="http://$api" -p no:cacheprovider -v \
    --synapse-report=build/docker-resilience.json --synapse-html=build/docker-resilience.html \
    "$@"
