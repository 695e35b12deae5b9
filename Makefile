# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone: they create the
# virtual environment, install everything from this repo's own files, and fetch the real model.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (a plain `pip install torch` may pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0
DEMO_MODEL ?= smollm2-135m
# The oldest transformers sdfp-hf supports (pyproject.toml's lower bound), in a venv of its own.
OLDEST_TRANSFORMERS ?= transformers==5.20.*
VENV_OLDEST ?= .venv-oldest
PY_OLDEST := $(VENV_OLDEST)/bin/python

.PHONY: install install-oldest demo test test-oldest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# The main job end to end on a real model: install it (sha256-checked), build a draft (a second run finds
# it in the profile cache), then plain generate and sdfp-hf on four prompts of different kinds, measured
# by the benchmark harness: tokens/s, speedup, accepted per round, sources, identity.
demo: install
	$(PY) -m benchmarks.catalogue install $(DEMO_MODEL)
	$(PY) examples/demo.py --model $(DEMO_MODEL)

# The test suite: unit tests on tiny random models, plus the real-model tests (marked slow).
test: install
	$(PY) -m benchmarks.catalogue install $(DEMO_MODEL)
	$(PY) -m pytest

# The generation / lossless tests (marker `lossless`) on the oldest supported transformers.
install-oldest: $(VENV_OLDEST)/.installed

$(VENV_OLDEST)/.installed: pyproject.toml
	python3 -m venv $(VENV_OLDEST)
	$(PY_OLDEST) -m pip install --quiet --upgrade pip
	$(PY_OLDEST) -m pip install --quiet "$(TORCH)"
	$(PY_OLDEST) -m pip install --quiet "$(OLDEST_TRANSFORMERS)" -e ".[test]"
	touch $@

test-oldest: install-oldest
	$(PY_OLDEST) -c "import transformers; print('transformers', transformers.__version__)"
	$(PY_OLDEST) -m pytest -m "lossless and not slow" -p no:cacheprovider

clean:
	rm -rf $(VENV) $(VENV_OLDEST) build *.egg-info .pytest_cache
