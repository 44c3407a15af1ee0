# Two commands do everything on a fresh machine:
#   make notebooks   # run every notebook end to end (toy profile), figures into figures/toy/
#   make test        # unit + parity tests, and every notebook in the smoke profile
# Both create the virtual environment in .venv when it is missing or older than pyproject.toml
# or constraints.txt (the exact versions of the last green run; pyproject.toml keeps ranges).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ip2p-installed
PROFILE ?= toy
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: venv test notebooks clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ip2p)"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

notebooks: venv
	$(BIN)/ip2p notebooks --profile $(PROFILE)

clean-venv:
	rm -rf $(VENV)
