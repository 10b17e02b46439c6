# `make train` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?=# a preset or YAML file, e.g. configs/fast.yaml; empty: best with a GPU, cpu without one
OUT ?=# the run folder; empty: $(CIFAR_RESNET_RUNS) (else runs)/<the config's name>
ARGS ?=# more options for `cifar-resnet train`, e.g. ARGS=--resume or ARGS="--overwrite --epochs 2"
# Where pip gets torch and torchvision. Empty: the configured index (PyPI's Linux wheels are the CUDA build,
# about 6 GB of venv). On a machine without a GPU, `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# installs the CPU build instead (under 1 GB).
TORCH_INDEX ?=
# The real CIFAR-10 for the notebooks' comparison: $CIFAR10_ROOT, else ./data (see the README's Data section).
DATA_ROOT := $(if $(CIFAR10_ROOT),$(CIFAR10_ROOT),$(CURDIR)/data)

.PHONY: setup train test
setup: $(VENV)/.installed

# One resolver call for torch, torchvision and the rest (TORCH_INDEX as an extra index: its +cpu builds rank
# above PyPI's of the same version), then scripts/check_torch.py runs a torchvision operator: a torchvision
# built for another torch stops setup here, in one line naming the fix, and .installed is not written.
$(VENV)/.installed: requirements.txt pyproject.toml scripts/check_torch.py
	$(PYTHON) -m venv $(VENV)
	@command -v nvidia-smi >/dev/null || [ -n "$(TORCH_INDEX)" ] || echo "setup: no GPU found; torch's default \
	build includes CUDA (about 6 GB). For the CPU build: rm -rf $(VENV) && make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu"
	$(VENV)/bin/pip install -q -r requirements.txt -e . $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(VENV)/bin/python scripts/check_torch.py "rm -rf $(VENV) && make setup$(if $(TORCH_INDEX), TORCH_INDEX=$(TORCH_INDEX)) \
	(if it fails again, the index was unreachable: check the network, or install torch and torchvision yourself \
	in one pip call)"
	touch $@

# Without CONFIG: best on a GPU; without a GPU, the cpu preset, with one line giving its estimate here.
train: setup
	$(VENV)/bin/cifar-resnet train $(if $(CONFIG),--config $(CONFIG)) $(if $(OUT),--out $(OUT)) $(ARGS)

# The unit tests, then the notebooks with their outputs compared. The notebooks need the real CIFAR-10: where
# it is not found they are skipped with one line (CI sets REQUIRE_REAL_CIFAR=1, and then they always run).
# Both write their runs to a temporary CIFAR_RESNET_RUNS, deleted afterwards: never into your runs/.
test: setup
	@runs="$$(mktemp -d)" && trap 'rm -rf "$$runs"' EXIT && export CIFAR_RESNET_RUNS="$$runs" && \
	echo "CIFAR_RESNET_RUNS=$$runs $(VENV)/bin/python -m pytest" && $(VENV)/bin/python -m pytest && \
	if [ -n "$(REQUIRE_REAL_CIFAR)" ] || [ -d "$(DATA_ROOT)/cifar-10-batches-py" ]; then \
	  echo "CIFAR10_ROOT=$(DATA_ROOT) $(VENV)/bin/python -m pytest --nbval ... notebooks/"; \
	  CIFAR10_ROOT="$(DATA_ROOT)" $(VENV)/bin/python -m pytest --nbval --nbval-current-env \
	    --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/; \
	else \
	  echo "make test: notebooks skipped: no CIFAR-10 in $(DATA_ROOT)/cifar-10-batches-py (their outputs are \
	computed on the real data); to run them, set CIFAR10_ROOT to the folder holding cifar-10-batches-py and rerun make test"; \
	fi
