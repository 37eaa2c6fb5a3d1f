# One command to build and test, one to run the demo; CI calls `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv test demo bench sanitize models clean

all: test

# (Re)install when the build inputs change: the extension is rebuilt in place.
$(STAMP): pyproject.toml setup.py include/shmring.h $(wildcard include/shmring/*.h) $(wildcard src/shmring/_core/*.c src/shmring/_core/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/shmring demo

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) benchmarks/bench_channel.py
	$(PY) benchmarks/bench_sync.py
	$(PY) benchmarks/bench_queue.py
	$(PY) benchmarks/bench_topic.py

# The Python tests of the native code against an ASan+UBSan build of the
# extension (the sanitizer runtimes are preloaded into the interpreter).
ASAN_DIR := build/asan
# The Python tests of the native code, every component's (not the CLI's, the docs' or the typing check).
SANITIZE_TESTS = tests/test_segment.py tests/test_liveness.py tests/test_lifetime.py \
	tests/test_loans.py $(wildcard tests/test_channel_*.py tests/test_queue_*.py tests/test_topic_*.py \
	tests/test_sync_*.py)
SANITIZER_LIBS = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
sanitize: $(STAMP)
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR) && cp -r src/shmring $(ASAN_DIR)/ && cp -r include $(ASAN_DIR)/shmring/ && rm -f $(ASAN_DIR)/shmring/*.so
	SHMRING_SANITIZE=1 $(PY) setup.py --quiet build_ext --build-lib $(ASAN_DIR) --build-temp $(ASAN_DIR)/tmp
	LD_PRELOAD="$(SANITIZER_LIBS)" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$(ASAN_DIR) \
		$(PY) -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS)

# The Promela models of the channel's and the queue's protocols, checked
# with Spin (Debian: spin), each also with planted faults it must find.
models:
	$(PYTHON) reliability/models/run.py $(if $(MODELS_LONG),--long)

# Kill storms (reliability/chaos, docs/RELIABILITY.md "Kill storms"): producers and
# consumers of every kind SIGKILLed at random and restarted, every item checked.
# A few hundred kills per kind; CHAOS_LONG=1: at least 10,000 per kind.
.PHONY: chaos
chaos: $(STAMP)
	$(PY) -m reliability.chaos run --plant-fault $(if $(filter 1,$(CHAOS_LONG)),--long)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info src/shmring/*.so
