# Every target bootstraps .venv from pyproject.toml; nothing installed by hand is assumed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synapse-installed

.PHONY: test demo breaker-demo shared-breaker-demo lint bench format clean serve system-deps image docker-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# Debian packages the tests drive for real (redis-server, debootstrap, chromium); a no-op once present.
system-deps:
	@scripts/system-deps.sh

test: $(STAMP) system-deps
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# The main job: the orders service under chaos, on the embedded server, with reports and gates.
DEMO_GATES := --synapse-gate all_recovered --synapse-gate "max_trip_seconds<=5" \
	--synapse-gate "max_recovery_seconds<=3" --synapse-gate "max_rejected_call_ms<=100"
demo: $(STAMP)
	$(PY) -m pytest examples/orders --synapse-chaos -p no:cacheprovider -v \
		--synapse-report=build/resilience.json --synapse-html=build/resilience.html $(DEMO_GATES)

# synapse-chaos:<version>, built with no registry (debootstrap base + wheels built here); cached.
image: $(STAMP) system-deps
	$(PY) docker/images.py chaos

# The orders suite against docker/compose.yaml: service, inventory and chaos server as containers.
docker-demo: image
	PY=$(PY) scripts/docker-demo.sh $(DEMO_GATES)

breaker-demo: $(STAMP)
	$(PY) examples/circuit_breaker_demo.py

# Three replica processes sharing one breaker through a redis-server it starts (or REDIS_URL).
shared-breaker-demo: $(STAMP) system-deps
	$(PY) examples/shared_breaker/demo.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP) system-deps
	$(PY) benchmarks/bench_breaker.py
	$(PY) benchmarks/bench_shared_breaker.py
	$(PY) benchmarks/bench_proxy.py
	$(PY) benchmarks/bench_chaos_tests.py
	$(PY) benchmarks/bench_abuse.py
	$(PY) benchmarks/bench_transport.py
	$(PY) benchmarks/bench_http_clients.py
	$(PY) benchmarks/bench_observability.py
	$(PY) benchmarks/bench_docker.py

serve: $(STAMP)
	$(VENV)/bin/synapse-chaos serve

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
