# The commands of the README: `make run`, `make check` and `make test`. Each sets up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup check test lint run production bench bench-production bench-unit-updates bench-serial-day-report bench-plant dist clean kafka-check kafka-jars

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt plugins/blockchain_provider/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e plugins/blockchain_provider
	# the build's egg-info beside the sources would publish the provider's entry points twice
	# (src/ is on sys.path): Airflow would load its plugin twice and report the second as an error
	rm -rf plugins/blockchain_provider/src/*.egg-info
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The fast loop: lint, then every test marked `unit` (tests/conftest.py marks a test that needs no
# broker, no database server and no Airflow process so, from the fixtures it requests).
check: setup lint
	$(BIN)/python -m pytest -m unit -q

# Two passes: the broker-dependent suites on an Apache Kafka KRaft cluster (3 nodes, started by the
# session from the jars kafka/pom.xml pins; needs Java >= 17 and Maven), then the tests that guard
# `make run`'s embedded broker on tansu (markers `tansu` and `also_tansu`; see README, Tests).
test: kafka-check setup lint kafka-jars
	TEST_KAFKA=apache $(BIN)/python -m pytest -m "not tansu" --durations=20
	TEST_KAFKA=tansu $(BIN)/python -m pytest -m "tansu or also_tansu" --durations=20

# Stops `make test` at once, naming what is missing, on a machine without Java >= 17 or Maven.
kafka-check:
	@$(PYTHON) -m local_services.kafka check

# The Apache Kafka jars from Maven Central, cached in ~/.cache/mes-blockchain/kafka-<version>/.
kafka-jars: setup
	$(BIN)/python -m local_services.kafka fetch

run: setup
	$(BIN)/python scripts/run_stack.py

# The production shape without Docker: CeleryExecutor (Redis, two workers), PostgreSQL metadata,
# 3 Apache Kafka brokers. Needs Debian's postgresql and redis-server, Java >= 17 and Maven.
# ARGS="--echo" runs it with request-id echo and an 8-slot pool (README, Production shape).
production: kafka-check setup kafka-jars
	$(BIN)/python scripts/production_stack.py $(ARGS)

# The operator's flows in Chromium (trigger form, Blockchain requests page), each against a stack
# of its own; E2E_STACK_DIR=.local runs them against the stack `make run` is running. Needs
# Debian's chromium: apt-get install -y chromium. The page is also opened under the FAB auth manager
# (docker-compose.yaml's) on an API server of its own.
.PHONY: browser-test
browser-test: setup
	@test -x "$${CHROMIUM_PATH:-/usr/bin/chromium}" || { echo "No Chromium: apt-get install -y chromium (or set CHROMIUM_PATH)"; exit 1; }
	$(BIN)/python -m pytest tests/e2e/test_browser_flow.py tests/e2e/test_requests_page_browser.py \
		tests/e2e/test_requests_page_fab_browser.py -v -rs

bench: setup
	$(BIN)/python bench/run_all.py

# 100 deferred gateway waits on one triggerer, on the production shape (about 10 minutes)
bench-production: kafka-check setup kafka-jars
	$(BIN)/python bench/triggerer_waits.py

# 20 production-unit updates, echo off (1 slot) then on (8 slots), on the production shape (about 5 minutes)
bench-unit-updates: kafka-check setup kafka-jars
	$(BIN)/python bench/unit_updates.py

# the day report of 5 units with every answer 1 s late, echo off (1 slot) then on (8), on the production shape (about 8 minutes)
bench-serial-day-report: kafka-check setup kafka-jars
	$(BIN)/python bench/serial_day_report.py

# 100 units' 120 changes with every write answered 1 s late, on the production shape, without echo;
# ARGS="--echo" with echo, ARGS="--day-report" the units' day report too
bench-plant: kafka-check setup kafka-jars
	$(BIN)/python bench/plant_scale.py $(ARGS)

# the provider's wheel and sdist, in dist/ (to install into an Airflow of your own)
dist: setup
	$(BIN)/python -m build --outdir dist plugins/blockchain_provider
	@# the build leaves its egg-info in src/, where the editable install would show Airflow the provider twice
	rm -rf plugins/blockchain_provider/src/*.egg-info

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
