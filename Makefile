# segda: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Threads per process for CPU runs (2-core machines: 2).
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test lint format bench clean

setup:
	$(PIP) install -q -e '.[dev,notebooks]'

lint: setup
	$(PYTHON) -m ruff check lib tests benchmarks data_scripts

test: setup
	$(PYTHON) -m ruff check lib tests benchmarks data_scripts
	$(PYTHON) -m pytest -q

demo: setup
	$(PYTHON) -m segda demo --out runs/demo

bench: setup
	$(PYTHON) benchmarks/train_step.py --device cpu

clean:
	rm -rf runs/demo .pytest_cache
