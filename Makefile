# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv if missing and installs exactly requirements.lock (every direct and transitive
# dependency, pinned with sha256 hashes, pip and setuptools included), then edgeprune itself without deps.
# torch is the 2.13.0 CPU wheel (constraints.txt pins it for the lock): pip finds it through its find-links
# (/opt/wheels on the machines of this project) or the PyTorch CPU index; the lock holds that wheel's hash.
# `make lock` re-resolves the loose ranges of pyproject.toml into a new requirements.lock.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: demo test lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/edgeprune compress mlp --data purchase-synth --sparsity 0.5 --quant int8 -o runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check edgeprune tests benchmarks

# pip-tools is installed into .venv for this target only; the installers (pip, setuptools) are locked too
lock:
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet pip-tools
	printf 'pip\nsetuptools>=68\n' | $(BIN)/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe \
		--strip-extras --extra dev --no-emit-index-url --no-emit-find-links -c constraints.txt \
		-o $(LOCK) pyproject.toml -

clean:
	rm -rf $(VENV) runs .pytest_cache
