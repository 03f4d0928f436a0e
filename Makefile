# Shepherd: `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test test-lowest chaos cluster-test cluster-sizing bench bench-quick services services-down status venv lock lint format schemas clean

# The services connect as the broker user `make services` made for them (scripts/services.sh env).
run: services
	users=$$(scripts/services.sh env) && eval "$$users" && $(VENV)/bin/shepherd up

# Everything, then a short cluster test (tests/cluster) in namespaces of its own.
test: services
	$(PY) -m pytest -q -ra --ignore=tests/cluster
	SHEPHERD_CLUSTER_JOBS=$${SHEPHERD_CLUSTER_JOBS:-200} scripts/netns.sh $(PY) -m pytest -q -ra -s tests/cluster

# Past one machine: 1000 jobs through a 3-node RabbitMQ cluster and a 4-server distributed
# MinIO while nodes, the active notifier and sheep are killed (test runs 200).
cluster-test: services
	SHEPHERD_CLUSTER_JOBS=$${SHEPHERD_CLUSTER_JOBS:-1000} scripts/netns.sh $(PY) -m pytest -q -s tests/cluster

# The same cluster without faults: the CPU each part (gateway, notifier, node) spends a job.
cluster-sizing: services
	SHEPHERD_CLUSTER_FAULTS=0 SHEPHERD_CLUSTER_JOBS=$${SHEPHERD_CLUSTER_JOBS:-1000} \
		scripts/netns.sh $(PY) -m pytest -q -s tests/cluster

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

# The exact versions of requirements.lock (make lock writes it from pyproject.toml), then
# Shepherd itself and its client SDK (client/), editable.
$(STAMP): pyproject.toml requirements.lock client/pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3 python3-venv"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV) || { echo "cannot create $(VENV): apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e . -e ./client
	@touch $(STAMP)

# The bench extra (the peers, matplotlib, psutil, PyJWT) only for the benchmark, not for make test;
# what it shares with the lock stays at the locked versions.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c requirements.lock -e '.[services,dev,examples,bench]'
	@touch $(BENCH_STAMP)

# requirements.lock: every package of the services, dev and examples extras, resolved by uv.
lock: venv
	$(VENV)/bin/uv pip compile pyproject.toml --extra services --extra dev --extra examples \
		--python-version 3.11 --no-header --quiet -o requirements.lock

# The lowest versions pyproject.toml allows for each direct dependency (uv's lowest-direct
# resolution) in a venv of their own, against the unit tests and the core of the integration
# tests: the declared minimums are checked, not guessed.
LOWEST := .venv-lowest
LOWEST_TESTS := tests/unit tests/integration/test_pipeline.py tests/integration/test_amqp_submission.py \
	tests/integration/test_notifier.py tests/integration/test_sheep.py tests/integration/test_live_streams.py \
	tests/integration/test_webhooks_end_to_end.py tests/integration/test_permissions.py
test-lowest: services
	rm -rf $(LOWEST)
	$(VENV)/bin/uv venv -q $(LOWEST) --python "$$($(PY) -c 'import sys; print(sys._base_executable)')"
	$(VENV)/bin/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct \
		-e '.[services,dev,examples]'
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

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
	rm -rf $(VENV) $(LOWEST) .pytest_cache build *.egg-info
