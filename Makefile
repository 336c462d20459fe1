# Two commands matter: `make demo` (set up everything, run the job on real data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PZ := $(VENV)/bin/pz
PYTEST_ARGS ?=

.PHONY: setup demo test package-check bench bench-api bench-state bench-erasure bench-hot-user bench-scale-out stack-up stack-down stack-status stack-reset lock run clean

setup: $(VENV)/.installed ## Python venv from pinned requirements (+ this project, editable: the pz command) + Kafka/connector jars + redis-server
	bash stack/stack.sh install

# The project goes in editable (--no-deps: its dependencies are the pinned requirements above), so
# `pz` runs the checkout's code; pyproject.toml is a prerequisite: a new command or version reinstalls.
# --no-compile: Python compiles a module when it is first imported, so only the modules the project
# uses are compiled, not every file of every wheel (most of a fresh install's time; README, `make demo`).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip==25.3
	$(VENV)/bin/pip install -q --no-compile -r requirements-dev.txt -c requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

demo: setup stack-up ## replay real data through the job on the local MiniCluster
	$(PZ) demo $(DEMO_ARGS)

test: setup ## unit + integration tests; the tests start Kafka and Redis themselves
	$(PY) -m pytest tests $(PYTEST_ARGS)

package-check: setup ## build wheel + sdist, install the wheel in a fresh venv, run pz outside the repo
	PYTHON=$(PYTHON) bash .ci/package-check

API_PORT ?= 8000

# The HTTP API runs beside the job on 127.0.0.1:$(API_PORT) and is stopped when the job ends; its key
# is $$PZ_API_KEYS, or one made up for this run and printed.
run: setup stack-up ## run the job unbounded against the local stack, the HTTP API beside it (Ctrl-C to stop)
	@export PZ_API_KEYS="$${PZ_API_KEYS:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(24))')}"; \
	$(PZ) api $(RUN_ARGS) --set api.host=127.0.0.1 --set api.port=$(API_PORT) & api=$$!; \
	trap 'kill $$api 2>/dev/null; wait $$api' EXIT; \
	echo "HTTP API: curl -H 'X-API-Key: $${PZ_API_KEYS%%,*}' http://127.0.0.1:$(API_PORT)/v1/users/<user id>/profile"; \
	$(PZ) run $(RUN_ARGS)

stack-up:
	bash stack/stack.sh up

stack-down:
	bash stack/stack.sh down

stack-status:
	bash stack/stack.sh status || true

stack-reset:
	bash stack/stack.sh reset

lock: ## re-resolve requirements.lock in a scratch venv
	rm -rf /tmp/pz-lock && $(PYTHON) -m venv /tmp/pz-lock
	/tmp/pz-lock/bin/pip install -q -r requirements-dev.txt
	{ echo '# Full transitive pins of requirements-dev.txt, from `pip freeze` in a fresh venv (make lock).'; \
	  /tmp/pz-lock/bin/pip freeze; } > requirements.lock

clean:
	rm -rf $(VENV)

bench: setup stack-up ## throughput + latency benchmark on the local stack (report in bench/results/)
	$(PY) -m bench.run $(BENCH_ARGS)

bench-api: setup stack-up ## HTTP API load test on loopback (bench/results/api-load.md)
	$(PY) -m bench.api_load $(BENCH_ARGS)

bench-state: setup stack-up ## memory and checkpoint size/time with 1M users in state (bench/results/state-scale.md)
	$(PY) -m bench.state_scale $(BENCH_ARGS)

bench-erasure: setup stack-up ## erasure time with 1M users in Redis (bench/results/erasure.md)
	$(PY) -m bench.erasure $(BENCH_ARGS)

bench-hot-user: setup ## ordinary users' events/s with and without one user sending 1M events (bench/results/hot-user.md)
	$(PY) -m bench.hot_user $(BENCH_ARGS)

bench-scale-out: setup stack-up ## the job at parallelism 1 and 2 on a standalone cluster of 1 and 2 TaskManagers (bench/results/scale-out.md)
	$(PY) -m bench.scale_out $(BENCH_ARGS)
