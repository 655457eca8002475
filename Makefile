# simgen — two commands set up everything on a fresh machine:
#   make demo   creates .venv (Python 3.11), installs simgen and runs the main job on defaults
#   make test   installs if needed and runs the test suite (one thread per library)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# One thread everywhere by default: on 2 cores, torch/numba/BLAS with 2 threads each
# collapse as soon as anything else runs (20x slowdowns seen).
THREADS ?= 1
export OMP_NUM_THREADS=$(THREADS)
export MKL_NUM_THREADS=$(THREADS)
export OPENBLAS_NUM_THREADS=$(THREADS)
export NUMBA_NUM_THREADS=$(THREADS)
export SIMGEN_THREADS=$(THREADS)
export XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=$(THREADS)
export MPLBACKEND=Agg
PYTEST_ARGS ?=

.PHONY: install demo test bench sim2real clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# pip (not uv/poetry): torch==2.14.1 / torchvision==0.29.1 come from local disk. The tested
	# versions in constraints.txt keep the resolver from backtracking (it did, for > 8 min).
	$(BIN)/python -m pip install -c constraints.txt -e '.[all,dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/simgen simulate film --model random --n 64 --size 256 --seed 0 -o out/demo.h5 --overwrite
	$(BIN)/simgen preview out/demo.h5 -o out/demo.png --overwrite
	$(BIN)/simgen info out/demo.h5

test: install
	$(BIN)/ruff check simgen tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The synthetic-only -> real experiment (fixed 30 epochs, ~75 min on one CPU thread); REAL=... picks another real set.
REAL ?= ../shared/realdata/dev/dsva_fecral
S2R_OUT ?= runs/s2r
sim2real: install
	$(BIN)/simgen sim2real --real $(REAL) -o $(S2R_OUT) --resume

bench: install
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick; done

clean:
	rm -rf out .pytest_cache .hypothesis
