# segda: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Threads per process for CPU runs (2-core machines: 2).
export OMP_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION = 1

NBVAL = --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup demo test test-unit test-notebooks lint bench suite clean

setup:
	$(PIP) install -q -e '.[dev,notebooks]'

# The walk's embedded benchmark rendered once into data/embedded (data_scripts/cache_embedded.py,
# about 15 s): every notebook kernel and training process then reads it instead of rendering
# the same 3,500 images again. A run reads it only if it holds exactly what the run would render
# (segda.data.embedded_cache); it is rebuilt when the generator or the walk's data settings change.
EMBEDDED_CACHE = data/embedded/target_val.npz
$(EMBEDDED_CACHE): lib/segda/data/synthetic.py lib/segda/presets/embedded/source_only.yaml data_scripts/cache_embedded.py
	$(PYTHON) data_scripts/cache_embedded.py --out data/embedded --preset embedded/source_only

lint: setup
	$(PYTHON) -m ruff check lib tests benchmarks data_scripts

# The unit tests and the committed notebooks under nbval, side by side in TEST_WORKERS
# one-thread processes (pytest-xdist; tests/conftest.py keeps the notebooks in two groups of
# consecutive notebooks, each in order, and starts the three long groups first, one per
# worker: three processes share the two cores, so no core idles while one long group waits
# on a row the other notebook group is training). The notebooks share trained runs in
# runs/notebooks; it is cleared first so that they are checked from scratch.
TEST_WORKERS ?= 3
test: setup $(EMBEDDED_CACHE)
	$(PYTHON) -m ruff check lib tests benchmarks data_scripts
	rm -rf runs/notebooks
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) \
		--dist loadgroup --no-loadscope-reorder tests notebooks $(NBVAL)

test-unit: setup $(EMBEDDED_CACHE)
	$(PYTHON) -m pytest -q tests

test-notebooks: setup $(EMBEDDED_CACHE)
	rm -rf runs/notebooks
	$(PYTHON) -m pytest -q notebooks $(NBVAL)

# The notebook sequence, executed with papermill at demo scale into runs/demo.
demo: setup $(EMBEDDED_CACHE)
	$(PYTHON) -m segda demo --out runs/demo

bench: setup
	$(PYTHON) benchmarks/train_step.py --device cpu

# The embedded results table: every method over three seeds, and the reference CSV the
# notebooks plot their own runs against; the table goes into docs/embedded_benchmark.md.
suite: setup $(EMBEDDED_CACHE)
	$(PYTHON) -m segda suite --run-root runs/embedded --seeds 0 1 2 --readme docs/embedded_benchmark.md --reference

clean:
	rm -rf runs/demo runs/notebooks .pytest_cache data/embedded
