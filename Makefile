# Every target creates .venv on first use; pip takes torch from the machine's local wheel store.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lint test demo demo-segmentation bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,viz]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# one pytest-xdist worker per core, a test file per worker at a time (module fixtures are built once); each worker
# computes on one thread (tests/conftest.py)
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=30

demo: $(STAMP)
	$(VENV)/bin/hf-detr demo

demo-segmentation: $(STAMP)
	$(VENV)/bin/hf-detr demo --task instance --output_dir demo_output_segmentation  # beside make demo's demo_output/

bench: $(STAMP)
	$(PY) -m benchmarks.bench_model
	$(PY) -m benchmarks.bench_image_processor
	$(PY) -m benchmarks.bench_recipe

clean:
	rm -rf $(VENV) build dist src/*.egg-info
