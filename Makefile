# `make demo` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# gpu-check: on a CUDA machine, without pip or network; DALI must be importable, e.g.
#   PYTHONPATH=/tmp/dali-site make gpu-check      (benchmarks/gpu_check.py says what it runs)
PY_GPU ?= python3

.PHONY: demo test install clean gpu-check gpu-check-2

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -c "import shutil, sys; f = shutil.disk_usage('.').free / 2**30; \
		f < 8 and print(f'warning: {f:.1f} GiB free on this disk; .venv (torch, DALI) takes about 7 GiB', file=sys.stderr)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,timm]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mixtrain demo

test: $(STAMP)
	$(PY) -m pytest -q

# two device calls of under 600 s each: part 1 (GPU tests, loader, profile), then part 2
# (training speedup, accuracy on Imagenette, whose data is carried in apart)
gpu-check:
	@PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" PY_GPU="$(PY_GPU)" GPU_CHECK_COMMAND="make gpu-check" \
		$(PY_GPU) benchmarks/gpu_check.py

gpu-check-2:
	@PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" PY_GPU="$(PY_GPU)" GPU_CHECK_COMMAND="make gpu-check-2" \
		$(PY_GPU) benchmarks/gpu_check.py --part 2

clean:
	rm -rf $(VENV) data runs
