# VIS: `make demo` runs the pipeline on the built-in sample, `make test` runs the tests.
# Both bootstrap .venv themselves on a fresh machine. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
# Stage commands call `python`, `dvc`, `visapp`: the ones in .venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export YOLO_OFFLINE := true

.PHONY: help install services browser demo test test-fast lint lint-imports format params sample image clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

# The install recipe is scripts/install.sh, which the Dockerfile runs too: torch pinned first (pip takes the CPU
# machines' local wheels; elsewhere it downloads that release), the package, then opencv-python swapped for the
# headless build.
$(VENV)/.installed: pyproject.toml scripts/install.sh
	python3 -m venv $(VENV)
	bash scripts/install.sh $(PY) -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv with the package, its tools and the test dependencies

sample: install ## Write the built-in sample dataset into data/raw (if absent) and track it with DVC
	@if [ ! -d data/raw ]; then visapp sample --out data/raw; fi
	dvc add --quiet data/raw

demo: sample ## Set everything up and run the pipeline on the sample dataset
	dvc repro
	dvc status
	dvc metrics show

# The service tests drive a real redis-server (Debian's package): installed when missing.
services:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (apt-get)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# The pages' browser tests drive Debian's Chromium (never a browser downloaded by Playwright): installed when missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The suite spreads over the cores, a test file per worker at a time (a file's module fixtures, such as a trained
# model, are built once): TEST_WORKERS=0 runs it in this process. The 20 slowest tests are listed at the end.
TEST_WORKERS ?= auto
test: install services browser ## Set everything up and run the whole test suite
	pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

test-fast: install ## Run the unit tier: tests that need nothing but Python (no git, DVC, server or training)
	pytest -m "unit and not integration"

lint: install ## ruff lint + format check, the import rules, and the type checker (mypy, [tool.mypy] of pyproject.toml)
	ruff check .
	ruff format --check .
	lint-imports
	mypy

format: install ## Apply ruff's fixes and formatting
	ruff check --fix .
	ruff format .

params: install ## Recompose params.yaml from conf/ (as `dvc exp run` does; `dvc repro` does not)
	visapp params compose

lint-imports: install ## Check the import rules of pyproject.toml (the layers of src/visapp)
	lint-imports

# The image built for real, with no daemon and no registry (buildah, chroot isolation, a debootstrap base), then
# checked from inside: scripts/image.sh says how. Not part of `test`: it installs torch with its CUDA libraries.
# IMAGE_VARIANTS: pypi (torch from pip's configured index), cpu, cu130 (from the PyTorch index).
IMAGE_VARIANTS ?= pypi
image: ## Build the Dockerfile with buildah and check it from inside (root; needs ~35 GB of disk)
	bash scripts/image.sh $(IMAGE_VARIANTS)

clean: ## Remove caches and training scratch (not data, not .venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache .hypothesis .cache
