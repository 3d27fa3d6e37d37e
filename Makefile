# Two commands matter: `make demo` and `make test`. Both create .venv when it is missing.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
# Two threads on two busy cores can be dozens of times slower than one (OpenMP busy waiting).
export OMP_NUM_THREADS ?= 1
export OMP_WAIT_POLICY ?= PASSIVE
export WANDB_MODE ?= disabled
export PYTHONUNBUFFERED = 1

.PHONY: venv test demo bench clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(TORCH)"
	$(VPY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(VPY) -m pytest -q

demo: venv
	bash Programs/demo/run_demo.sh

bench: venv
	$(VPY) benchmarks/run_all.py

clean-demo:
	rm -rf Programs/models/demo_llama Programs/results/demo* Programs/gathered_data_demo* Programs/data/demo
