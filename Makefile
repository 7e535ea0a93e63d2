# One entry point for people and CI: every target sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps fhir-server demo test unit lint bench scale-out clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/batchbridge demo

system-deps:
	bash scripts/system-deps.sh

# The real FHIR R4 server the FHIR tests run against (Medplum's FHIR router from npm), cached
# in ~/.cache/batchbridge/medplum-fhir-<hash of its package-lock>; a no-op once installed.
fhir-server:
	bash scripts/fhir-server.sh

# lint-imports checks the rooms' one-way imports ([tool.importlinter] in pyproject.toml);
# its graph takes a fraction of a second, so no cache folder is kept.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

test: system-deps fhir-server lint
	$(BIN)/pytest

# Full crash/fault/hostile-input/PHI suites (a quick subset runs in `make test`).
test-reliability: system-deps $(STAMP)
	BATCHBRIDGE_RELIABILITY=full $(BIN)/pytest tests/reliability

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# Benchmarks (bench/run_bench.py): every stage against its floor in the same run, on real
# sshd, gpg, PostgreSQL and a Prefect server. ROWS=N sets the rows (per file for
# bench-parallel, of the smaller file for bench-growth).
.PHONY: bench-growth bench-hl7 bench-parallel
BENCH_ROWS = $(if $(ROWS),--rows $(ROWS))

bench: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/run_bench.py main $(BENCH_ROWS)

# 1M then 10M rows: time ratio and peak RSS.
bench-growth: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/run_bench.py growth $(BENCH_ROWS)

# The HL7 v2 reader on 100k OBX.
bench-hl7: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/run_bench.py hl7

# 8 files x 100k rows in one run, parallel_files 1 vs 4.
bench-parallel: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/run_bench.py parallel $(BENCH_ROWS)

# Prefect server on PostgreSQL, two process workers, four tenants (one with a bad key).
scale-out: system-deps $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/scale_out.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
