# Set-up and entry points. Every target creates .venv if missing and installs the exact pins of
# requirements.lock (torch==2.13.0 CPU wheel included), then the project itself in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install clean

install: $(STAMP)

# --no-compile: byte-compiling every file of torch, ray and the rest at install time costs more of the set-up than
# compiling, on first import, the modules actually used.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -r requirements.lock
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m rfml.demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The TorchSig baseline runs in its own venv (.venv-torchsig), made by benchmarks/torchsig_env.sh.
bench: $(STAMP)
	bash benchmarks/torchsig_env.sh .venv-torchsig
	$(PY) benchmarks/synth_throughput.py --torchsig-python .venv-torchsig/bin/python
	$(PY) benchmarks/loader_throughput.py
	$(PY) benchmarks/profiler_agreement.py
	$(PY) benchmarks/train_overhead.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
