# The two commands: `make demo` and `make test`. Each creates or updates .venv itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= tiny
STAMP   := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test unit notebooks bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel (a plain `torch` would pull a multi-GB CUDA build)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lab run --profile $(PROFILE)
	$(BIN)/lab app compare --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q
	LAB_PROFILE=$(PROFILE) $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:randomly labs/ -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

notebooks: $(STAMP)
	$(BIN)/jupyter lab labs/

bench: $(STAMP)
	$(BIN)/lab bench --profile $(PROFILE)

clean:
	rm -rf runs/
