# The two commands: `make demo` and `make test`. Each creates or updates .venv itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= tiny
STAMP   := $(VENV)/.installed
TORCH_INDEX ?=

export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test unit notebooks execute bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned (a plain `torch` would pull the newest, multi-GB CUDA build); TORCH_INDEX picks the CPU
	# wheel where pip does not have it already: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
	$(BIN)/python -m pip install -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lab run --profile $(PROFILE)
	$(BIN)/lab app compare --profile $(PROFILE)

# nbval stops a cell after 2,000 s by default; notebook 02's pretraining cell takes 1,025 s on a CPU without bf16
# kernels (float32), so a host half as fast again would fail CI on time alone. An hour per cell still catches a hang.
# The unit tests run one torch thread each (tests/conftest.py), so pytest-xdist runs them on every core: 5.5 minutes
# instead of 8.7 on a 2-core host. The notebooks run one after another: each reads what the one before it built.
test: $(STAMP)
	$(BIN)/python -m pytest tests -q -n auto --dist worksteal
	LAB_PROFILE=$(PROFILE) $(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout 3600 \
	  -p no:randomly labs/ -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q -n auto --dist worksteal

notebooks: $(STAMP)
	$(BIN)/jupyter lab labs/

# Executes labs/*.ipynb in order and saves their outputs in place (what is committed), then merges each cell's
# consecutive stream outputs as Jupyter shows them (a progress bar is otherwise stored once per update).
execute: $(STAMP)
	cd labs && for nb in 0*.ipynb; do \
	  LAB_PROFILE=$(PROFILE) ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=-1 $$nb && \
	  ../$(BIN)/jupyter nbconvert --to notebook --inplace --coalesce-streams $$nb || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/lab bench --profile $(PROFILE)

clean:
	rm -rf runs/
