# Everything a fresh machine needs: `make train` and `make test` create the virtual
# environment and install the project first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# torch/torchvision are pinned here (not in pyproject) so users elsewhere keep open ranges.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install lint train test test-slow bench bench-gpu compare-policies clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test,lint]"
	touch $(STAMP)

## Lint, format and types (also before each commit: .pre-commit-config.yaml; CI runs it before the tests).
lint: $(STAMP)
	$(VENV)/bin/ruff check artmove benchmarks tests
	$(VENV)/bin/ruff format --check artmove benchmarks tests
	$(VENV)/bin/mypy

## The main job: the demo experiment on the embedded synthetic paintings, offline.
train: $(STAMP)
	$(PY) -m artmove.train experiment=demo $(ARGS)

## The default test suite (at most 6 min on 2 cores: heavier runs are marked slow).
test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

## Slow tests: longer runs on the real painting sets in ../shared/data.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

## Benchmarks; numbers are written to benchmarks/results/.
bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

## One GPU: resnet50 images/s (fp32, bf16, channels-last, compile, unfreeze=0.2, plain loop, end-to-end) -> benchmarks/results/gpu.md
bench-gpu: $(STAMP)
	$(PY) -m benchmarks.bench_gpu $(ARGS)

## The fine-tuning policies on real paintings (tens of minutes on 2 CPU cores) -> docs/policies.md.
compare-policies: $(STAMP)
	$(PY) -m benchmarks.compare_policies $(ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache
