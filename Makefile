# The suite's commands. A fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# checkov (the manifests' security scan) lives in its own environment: its
# dozens of pinned dependencies stay out of the suite's.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
# pytest-xdist processes for `make test`; each test makes its own databases.
TEST_WORKERS ?= 2

.PHONY: setup proto messages demo debian-tools test fuzz lint run bench-quota bench-chaos bench-match bench-calendar bench-edge clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python tools/protogen.py
	touch $(STAMP)

proto: setup  ## regenerate gen/python and gen/web (the typed web clients: needs Node) from protos/
	$(BIN)/python tools/protogen.py
	$(BIN)/python tools/webgen.py

demo: setup  ## the suite's story on embedded defaults (SQLite, no other server)
	$(BIN)/eapctl demo

run: setup  ## all services in one process on 127.0.0.1:50051, SQLite; browsers via the edge on 127.0.0.1:8080
	$(BIN)/eapctl serve all --edge

messages: setup  ## refresh the translation catalogs (zh_TW, en) from the N_ and tr("...") marks in the code
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k tr --no-location --sort-output -o services/runtime/locale/eap.pot services
	$(BIN)/pybabel update -i services/runtime/locale/eap.pot -d services/runtime/locale -D eap --no-fuzzy-matching --ignore-obsolete

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==3.3.30"

debian-tools:  ## Chromium, Prometheus and promtool for some tests, where missing and installable
	-@bash tools/ensure-debian-tools.sh

test:  ## every test; PostgreSQL and Redis on 127.0.0.1 (started here if down)
	@$(MAKE) --no-print-directory -j3 setup $(CHECKOV) debian-tools  # at once: they are independent
	-@bash tools/ensure-stores.sh
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

fuzz: setup  ## 2,000 fuzzed requests to every RPC, on SQLite and PostgreSQL (make test: 120, SQLite)
	-@bash tools/ensure-stores.sh
	EAP_FUZZ_CALLS_PER_RPC=$${EAP_FUZZ_CALLS_PER_RPC:-2000} \
	EAP_FUZZ_BACKENDS=$${EAP_FUZZ_BACKENDS:-sqlite,postgres} \
	EAP_TEST_HANG_SECONDS=7200 $(BIN)/python -m pytest -q -s -o faulthandler_timeout=3600 tests/suite/test_fuzz.py

lint: setup
	$(BIN)/ruff check services tests tools bench
	$(BIN)/ruff format --check services tests tools bench
	$(BIN)/mypy services
	$(BIN)/lint-imports
	$(BIN)/buf lint
	$(BIN)/python tools/protogen.py --check
	$(BIN)/python tools/webgen.py --check

bench-quota: setup  ## Reserve+Commit vs no-op over gRPC; writes bench/RESULTS.md
	-@bash tools/ensure-stores.sh
	$(BIN)/python bench/quota_bench.py

bench-chaos: setup  ## open-loop R+C at twice the quota target, 3 replicas, one SIGKILLed; writes bench/RESULTS.md
	-@bash tools/ensure-stores.sh
	$(BIN)/python bench/chaos_bench.py

bench-match: setup  ## eapctl match solve on S, M, L x seeds 1-3 beside greedy; writes bench/RESULTS.md
	$(BIN)/python bench/match_bench.py

bench-edge: setup  ## unary calls through the Envoy edge beside direct gRPC, 16 and 64 clients; writes bench/RESULTS.md
	$(BIN)/python bench/edge_bench.py

bench-calendar: setup  ## eapctl calendar plan on a year for 2,000 people, 300 events; writes bench/RESULTS.md
	$(BIN)/python bench/calendar_bench.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) var .pytest_cache .mypy_cache .ruff_cache
