# The two first commands of the README: `make reproduce` and `make test`. Both set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# g++ and ninja build the EN layer's C++ kernel on first use (en_analysis/nn/cpu_kernel.py)
APT_PACKAGES := dataset-fashion-mnist wordnet-base g++ ninja-build
# the explorer page is tested in a real browser (Debian's, driven by playwright); the compiled
# EN layer (train.compile_en_layers) in C++ that torch.compile builds with Python's headers
TEST_APT_PACKAGES := chromium python3-dev
TORCH := torch==2.14.1 torchvision==0.29.1
# One pip call, without pip's byte-compilation (one core), then compileall on every core: set-up
# took 1 min 25 s instead of 2 min 25 s on 2 cores. Like pip, compileall skips a file this Python
# cannot compile (torch ships a Python-3.12-only test module), so its exit status is no error.
PIP_INSTALL := $(BIN)/pip install -q --no-compile
COMPILE := $(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; \
	print(sysconfig.get_paths()["purelib"])')" >/dev/null || :

.PHONY: setup setup-test reproduce quick test test-numerics lint format docs-reference docs docs-check readme bench clean

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test
	@dpkg -s $(TEST_APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_APT_PACKAGES); }

$(VENV)/.installed: pyproject.toml
	@missing="$$(dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || echo '$(APT_PACKAGES)')"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP_INSTALL) $(TORCH) -e .
	$(COMPILE)
	touch $@

# the test tools (pytest, ruff, playwright, jupyter's kernel, tensorboard) only where they are used
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	$(COMPILE)
	touch $@

reproduce: setup  ## the main job: train + every analysis step on the embedded default
	$(BIN)/en-analysis reproduce --preset fashion-mnist

quick: setup  ## the same on the under-2-minute preset
	$(BIN)/en-analysis reproduce --preset fashion-mnist-quick

test: setup-test lint  ## the test suite (CI runs exactly this)
	$(BIN)/python -m pytest -q

# The numerics-sensitive tests again on other kernels: ATen's generic (non-AVX) code, which is
# also the EN kernel's build without AVX2 (a CPU without AVX2), AVX2 where this CPU has AVX-512,
# and one thread. A tolerance that only this CPU's kernels meet fails here first (CI runs it).
NUMERICS := tests/test_exemplar_norm.py tests/test_ratios.py tests/test_model.py \
	tests/test_resume.py tests/test_train.py tests/test_bootstrap.py tests/test_metrics.py
test-numerics: setup-test
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICS)
	@if grep -qw avx512f /proc/cpuinfo; then \
		echo ATEN_CPU_CAPABILITY=avx2; \
		ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICS); fi
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check en_analysis tests benchmarks scripts
	$(BIN)/ruff format --check en_analysis tests benchmarks scripts

format: $(VENV)/.installed-test
	$(BIN)/ruff format en_analysis tests benchmarks scripts
	$(BIN)/ruff check --fix en_analysis tests benchmarks scripts

# docs/settings.md and docs/cli.md, generated from the settings' and steps' declarations and the
# parser (a test fails when the committed files are not what the code generates)
docs-reference: setup
	$(BIN)/python -m en_analysis.cli.reference

readme: setup  ## README.md's tables from figures/'s CSVs (RUN=runs/fashion-mnist copies them first)
	$(BIN)/python scripts/readme.py $(if $(RUN),--from $(RUN))

# The benchmarks the measurements page (docs/guide/performance.md) cites, one after the other,
# each printing its ratios; `make bench-tsne` (or `make bench BENCHMARKS="tsne extract"`) runs
# some. compiled.py takes minutes (the first compiled step compiles); calibration.py, scale.py RUN
# and gpu.py (CUDA) are run by hand.
BENCHMARKS ?= en_layer options epoch extract tsne compiled

# The documentation site (mkdocs.yml; docs/guide/development.md says how it is built): the docs
# extras, the notebooks executed against a run (EN_ANALYSIS_RUN, else runs/fashion-mnist, else a
# tiny run trained into build/docs-run), then mkdocs with warnings as errors, into site/.
$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[docs]'
	$(COMPILE)
	touch $@

docs: $(VENV)/.installed-docs  ## this site -> site/
	$(BIN)/python scripts/build_notebooks.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# the built site in Debian's headless chromium: screenshots (build/docs-screenshots/) not blank,
# the search finds the API (make setup-test installs chromium)
docs-check: setup-test $(VENV)/.installed-docs
	$(BIN)/python scripts/check_site.py

bench: setup  ## timing ratios (see benchmarks/)
	@set -e; for b in $(BENCHMARKS); do \
		echo "== benchmarks/$$b.py"; $(BIN)/python benchmarks/$$b.py; done

bench-%: setup
	$(BIN)/python benchmarks/$*.py

clean:
	rm -rf $(VENV) runs site build docs/notebooks
