# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changed) the virtualenv in .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# What .venv takes with torch's CPU build (2.0 GB measured) plus pip's room to unpack.
VENV_NEEDS_MB ?= 2200

.PHONY: demo test venv bench clean duplicates disk-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory disk-check
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
	$(BIN)/dreamstream bench --live-max

clean:
	rm -rf $(VENV) var .pytest_cache

# pip fails half-way through torch with "No space left on device" otherwise; say so before starting.
disk-check:
	@free_mb=$$(( $$(df -Pk . | awk 'NR==2 {print $$4}') / 1024 )); \
	if [ "$$free_mb" -lt $(VENV_NEEDS_MB) ]; then \
	  echo "make: .venv needs about $(VENV_NEEDS_MB) MB (torch's CPU build alone 750 MB), but only $$free_mb MB are free on $$(df -P . | awk 'NR==2 {print $$6}')." >&2; \
	  echo "make: free some space there (or set VENV_NEEDS_MB lower if you know better), then run make again." >&2; \
	  exit 1; \
	fi
