# Two commands do everything on a fresh machine:
#   make notebooks   # run every notebook end to end (toy profile), figures into figures/toy/
#   make test        # unit + parity tests, every notebook in the smoke profile, nbval on the short ones
# Both create the virtual environment in .venv when it is missing or older than pyproject.toml
# or constraints.txt (the exact versions of the last green run; pyproject.toml keeps ranges).
#   make verify-notebooks   # nbval on every notebook: committed key numbers = what the code computes
#   make publish-notebooks  # run the toy profile, write its outputs back into notebooks/ to commit

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ip2p-installed
PROFILE ?= toy
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: venv test notebooks verify-notebooks publish-notebooks clean-venv

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

# Re-executes each committed notebook (toy defaults) and compares the outputs of the cells tagged
# nbval-check-output; figures go to build/, never over the committed figures/toy/.
verify-notebooks: venv
	IP2P_FIGURE_ROOT=$(CURDIR)/build/nbval-figures $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

publish-notebooks: venv
	$(BIN)/ip2p notebooks --profile toy --publish

clean-venv:
	rm -rf $(VENV)
