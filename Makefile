# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changed) the virtualenv in .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test venv bench clean duplicates

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch from the local wheel; never a CUDA build from the index.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,test,rocksdb]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/dreamstream demo

bench: $(STAMP)
	$(BIN)/dreamstream bench

clean:
	rm -rf $(VENV) var .pytest_cache
