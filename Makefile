# Quick start: `make demo` and `make test` work on a fresh machine with Python >= 3.11 and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cliplab-installed

.PHONY: demo test install clean bench browser docs-numbers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install only when the package metadata changes; second runs skip this in well under a second.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cliplab demo

# Debian chromium + chromedriver for the report's browser test (needs root and apt; the test skips, saying why,
# when they cannot be installed).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	     chromium chromium-driver >/dev/null) || echo "could not install chromium; the browser test will be skipped"; \
	else echo "chromium/chromedriver missing and not root with apt-get: the browser test will be skipped"; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Every tiny-shapes figure in README.md (the <!-- numbers:NAME --> regions), computed from the shipped checkpoint.
docs-numbers: $(STAMP)
	$(BIN)/python benchmarks/docs_numbers.py

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
