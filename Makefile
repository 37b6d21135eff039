# ccsim — every target sets up what it needs on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIO ?= scenarios/cryptocity_day.yaml

.PHONY: install browser run test lint typecheck importlint pytest docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium for the browser tests comes from Debian's package (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	$(BIN)/ccsim run $(SCENARIO)

lint: install
	$(BIN)/ruff check services sim tests benchmarks

typecheck: install
	$(BIN)/mypy

importlint: install
	$(BIN)/lint-imports

# Every test, on every core (pytest-xdist; a module's tests stay on one worker, so its module-scoped
# set-ups are made once). PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= auto
pytest: install browser
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadscope

# The timing-sensitive tests three times in a row while two busy loops keep both cores busy
# (docs/contributing.md, "Tests in parallel, and on a busy machine"); stops at the first failure.
TIMING_TESTS ?= tests/test_live_load.py tests/faults tests/test_live_concurrency.py tests/test_live_recovery.py \
  tests/test_ledger_crash.py
.PHONY: test-busy
test-busy: install
	@timeout 3600 $(PY) -c 'while True: pass' & b1=$$!; timeout 3600 $(PY) -c 'while True: pass' & b2=$$!; \
	trap 'kill $$b1 $$b2 2>/dev/null' EXIT; \
	for run in 1 2 3; do echo "== run $$run of 3, both cores kept busy"; \
	  $(BIN)/pytest -q -p no:cacheprovider $(TIMING_TESTS) || exit 1; done

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint typecheck importlint docs pytest

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache

# Rewrite the real-report figures in docs/reading-the-report.md from a run of $(SCENARIO)
# (a full CryptoCity day takes about half a minute; pass REPORT_DOCS_SET="--set k=v" to vary it).
REPORT_DOCS_SET ?=
.PHONY: report-docs
report-docs: install
	$(BIN)/python -m sim.report.docs_figures --scenario $(SCENARIO) $(REPORT_DOCS_SET)

# Regenerate docs/scenario-reference.md from the scenario schema (tests/test_docs_reference.py
# fails when the page and the schema differ).
.PHONY: scenario-reference
scenario-reference: install
	$(BIN)/python -m sim.scenario_reference > docs/scenario-reference.md

# Fault injection (docs/reliability.md): the tests/faults suite with every short run on both databases
# (CCSIM_FAULTS_ALL=1; make test makes each kind of fault once, tests/faults/scope.py: short bank check, proxy, short
# party faults), then the long Jepsen-style bank check on SQLite and PostgreSQL with SIGKILLs of the
# ledger service, then the party faults on both databases (>= 30 kills each, a PostgreSQL crash, a
# partition, proxy chaos, clock jumps), then the supervised kills on both databases (a real ccsim serve
# whose children are SIGKILLed and restarted by its supervisor, >= 30 each, with the hostile probes of
# issue 15, F1-F6). Reports: tests/artifacts/bank_check_<db>.json, proxy_duplicates_<db>.json,
# party_faults_<db>.json and .html, supervised_faults_<db>.json.
FAULTS_DURATION_S ?= 120
FAULTS_KILLS ?= 30
PARTY_FAULTS_DURATION_S ?= 180
PARTY_FAULTS_KILLS ?= 32
SUPERVISED_DURATION_S ?= 240
SUPERVISED_KILLS ?= 32
.PHONY: faults
faults: install
	CCSIM_FAULTS_ALL=1 $(BIN)/pytest -q tests/faults
	$(BIN)/python -m tests.faults.bank_check --duration-s $(FAULTS_DURATION_S) --kills $(FAULTS_KILLS)
	$(BIN)/python -m tests.faults.party_faults --db both --duration-s $(PARTY_FAULTS_DURATION_S) \
	  --kills $(PARTY_FAULTS_KILLS)
	$(BIN)/python -m tests.faults.supervised --db both --duration-s $(SUPERVISED_DURATION_S) \
	  --kills $(SUPERVISED_KILLS)

# Regenerate docs/api-reference.md from the live services' OpenAPI documents.
.PHONY: api-reference
api-reference: install
	$(BIN)/python -m sim.live.api_reference > docs/api-reference.md
