# One-command set-up: `make run` and `make test` create .venv and install once (stamp file).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dvehelpers-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# JupyterLab refuses to start as root without this flag.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup run test lab bench lint clean data models site

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# FULL=1 executes the notebooks at full size (about an hour on a 2-core CPU) instead of DVE_QUICK sizes.
run: $(STAMP)
	$(BIN)/python -m dvehelpers run $(if $(FULL),--full,)

# The browser test (tests/test_browser.py) runs when Chromium and Playwright are installed; the first line says.
test: $(STAMP)
	@$(BIN)/python -c "from tests.browser_harness import browser_test_status; print(browser_test_status())"
	DVE_QUICK=1 $(BIN)/python -m pytest -q tests
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		DVE_QUICK=1 $(BIN)/python -m pytest -q --nbval-lax notebooks; \
	else echo "no notebooks to execute yet"; fi

# The static website of the series from the committed notebooks (nothing is executed): build/site/index.html.
site: $(STAMP)
	$(BIN)/python -m dvehelpers site

lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks

data: $(STAMP)
	$(BIN)/python -m dvehelpers render

# Retrain the shipped an8Flower checkpoints (data/models/), one variant and architecture at a time, and refit
# their relevant-filter interpretations (data/models/vebi/).
models: $(STAMP)
	for v in single-6c double-12c; do for a in vgg alexnet; do \
		$(BIN)/python -m dvehelpers train --variant $$v --arch $$a || exit 1; \
		$(BIN)/python -m dvehelpers interpret --variant $$v --arch $$a || exit 1; done; done

bench: $(STAMP)
	for m in vgg16 resnet50 efficientnet-lite0; do $(BIN)/python benchmarks/bench_methods.py --model $$m --write || exit 1; done
	$(BIN)/python benchmarks/bench_engine.py --write
	$(BIN)/python benchmarks/bench_data.py --write

lint: $(STAMP)
	$(BIN)/ruff check dvehelpers tests benchmarks
	$(BIN)/ruff format --check dvehelpers tests benchmarks

clean:
	rm -rf build results .pytest_cache
