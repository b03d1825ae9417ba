# Every target creates .venv and installs genqueue into it first (one command does all set-up).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: install demo test test-fast e2e-metrics chaos bench bench-10k bench-smoke bench-durable lint typecheck fmt compose-check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "genqueue needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make demo: 200 videos through 2 real workers against the local simulator (~1 minute)
demo: $(STAMP)
	$(VENV)/bin/genqueue demo $(DEMO_ARGS)

## make test: the whole default suite (unit, Redis, in-process and subprocess integration)
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make test-fast: without the subprocess integration tests
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## make e2e-metrics: the dashboard, Prometheus config and alert rules, checked with promtool and
## evaluated on a real Prometheus after a small demo (needs `apt-get install prometheus`)
e2e-metrics: $(STAMP)
	$(PY) -m pytest tests/observability $(PYTEST_ARGS)

## make chaos: 1,000 videos, faulty upstream, workers SIGKILLed, Redis SIGKILLed; both with and
## without upstream idempotency -> chaos-report.json (a short form runs inside make test)
chaos: $(STAMP)
	$(PY) -m tests.chaos $(CHAOS_ARGS)

## make bench: genqueue vs naive arq vs the seed loop (same simulator, workload, workers), the
## floor of one poll, pooled sigma=0.2 draws, the shift workloads on both simulator profiles, a
## scale sweep, an idle worker's cost, the ceiling of one Redis, budgets, admission (first come,
## first served vs fair shares, ~16 min) -> bench/results.json + bench/RESULTS.md (~2 h 20 min,
## of which the four shift parts at three draws each take ~75 min; BENCH_ARGS='--shift-seeds 1'
## makes them ~25 min; one part: BENCH_ARGS='--only admission')
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

## make bench-10k: 10,000 in-flight videos at time scale 1 on 2 workers (~8 min); merged into
## bench/results.json and bench/RESULTS.md
bench-10k: $(STAMP)
	$(PY) -m bench tenk $(BENCH_ARGS)

## make bench-smoke: the whole harness at toy size (about two minutes); results in a temp dir
bench-smoke: $(STAMP)
	$(PY) -m bench --smoke $(BENCH_ARGS)

## make bench-durable: what waiting for a replica costs per create and per submit, on a local
## Sentinel deployment (primary, two replicas, three sentinels) -> bench/durable_wait.json
bench-durable: $(STAMP)
	$(PY) -m bench.durable_wait $(BENCH_ARGS)

lint: $(STAMP) compose-check typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## mypy cannot follow the editable install's package-dir mapping: check an installed copy.
## Errors name files under .typecheck/genqueue/<part>/..., i.e. <part>/... in the repository.
typecheck: $(STAMP)
	rm -rf .typecheck
	$(PY) -m pip install -q --no-deps --no-build-isolation --target .typecheck .
	rm -rf build
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p genqueue

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## The compose file against the Compose Specification (offline) and docker-compose v1's parser.
compose-check: $(STAMP)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if command -v docker-compose >/dev/null; then \
		TOGETHER_API_KEY=compose-check GENQUEUE_API_KEYS=compose-check docker-compose -f docker-compose.yml --profile sim config -q && echo "docker-compose config: ok"; \
	else echo "docker-compose not installed: skipped its check"; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .typecheck build dist *.egg-info
