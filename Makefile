# Shepherd: `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test chaos bench bench-quick services services-down status venv lint format schemas clean

# The services connect as the broker user `make services` made for them (scripts/services.sh env).
run: services
	eval "$$(scripts/services.sh env)" && $(VENV)/bin/shepherd up

test: services
	$(PY) -m pytest -q -ra

# 500 jobs through kill -9 of every part and restarts of RabbitMQ and MinIO (test runs 60).
chaos: services
	SHEPHERD_CHAOS_JOBS=$${SHEPHERD_CHAOS_JOBS:-500} $(PY) -m pytest -q -s tests/chaos

# The real stack against Celery, Celery with the same guarantees and Dramatiq on the same servers: bench/results/<UTC time>.json
# and .png, and the table in docs/performance.md (full runs). BENCH_ARGS passes options
# (python -m bench --help); bench-quick runs fewer jobs, in under two minutes.
bench: services $(BENCH_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: services $(BENCH_STAMP)
	$(PY) -m bench --quick $(BENCH_ARGS)

services: venv
	@scripts/services.sh up

services-down:
	@scripts/services.sh down

status:
	@scripts/services.sh status

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3 python3-venv"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV) || { echo "cannot create $(VENV): apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,examples]'
	@touch $(STAMP)

# The bench extra (the peers, matplotlib, psutil, PyJWT) only for the benchmark, not for make test.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,examples,bench]'
	@touch $(BENCH_STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate what is derived from schemas/: RabbitMQ definitions, configuration reference.
schemas: venv
	$(PY) -m schemas definitions > deploy/rabbitmq/definitions.json
	$(PY) -m schemas reference > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
