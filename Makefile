# `make train` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= configs/best.yaml
OUT ?= runs/$(basename $(notdir $(CONFIG)))

.PHONY: setup train test
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt -e .
	touch $@

train: setup
	$(VENV)/bin/cifar-resnet train --config $(CONFIG) --out $(OUT)

# The unit tests, then the notebooks with their outputs compared.
test: setup
	$(VENV)/bin/python -m pytest
	$(VENV)/bin/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/
