# Set-up and entry points. Every target creates .venv if missing and installs the exact pins of
# requirements.lock (torch==2.13.0 CPU wheel included), then the project itself in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install clean

install: $(STAMP)

# Byte code is compiled once, here, by compileall (which writes it whatever PYTHONDONTWRITEBYTECODE says; these
# machines set it, so without this step every process, test subprocesses and CLI calls included, recompiles torch and
# Lightning from source). py312_intrinsics is a torch test file in Python 3.12 syntax.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -r requirements.lock
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q -j 0 -x 'py312_intrinsics' $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') ondevice rfml slm > /dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m rfml.examples.demo --out demo_out

# Two pytest-xdist workers, one torch thread each (tests/conftest.py), fill the two cores that one serial process
# left half idle; worksteal keeps each file's tests together (module fixtures run once) yet rebalances at the end.
# `make test TEST_WORKERS=0` runs serially; a plain `pytest` is serial too.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

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
