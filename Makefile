# One command to build and test, one to run the demo; CI calls `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv test test-bridge demo bench docs sanitize models fuzz fuzz-seeds mutate clean

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

# The bridge between machines (docs/BRIDGE.md), tested between two network
# namespaces with a private /dev/shm each: needs root and iproute2, and
# nftables for the packet-loss tests (they skip without them, and fail under CI).
test-bridge: $(STAMP)
	$(PY) -m pytest -q tests/bridge

demo: $(STAMP)
	$(VENV)/bin/shmring demo

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) benchmarks/bench_channel.py
	$(PY) benchmarks/bench_sync.py
	$(PY) benchmarks/bench_queue.py
	$(PY) benchmarks/bench_queue_arrays.py
	$(PY) benchmarks/bench_topic.py
	$(PY) benchmarks/bench_aio.py
	$(PY) benchmarks/bench_arrays.py

# The API reference site (docs/site/conf.py says how it is made) into build/docs;
# every warning is an error, and -E reads every page again, so a run after a
# failed one fails the same way instead of passing on the saved environment.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -E -W --keep-going -b html docs/site build/docs

# The Python tests of the native code against an ASan+UBSan build of the
# extension (the sanitizer runtimes are preloaded into the interpreter).
ASAN_DIR := build/asan
# The Python tests of the native code, every component's (not the CLI's, the docs' or the typing check),
# without the side-by-side runs of multiprocessing's own queues (test_queue_api.py's
# [multiprocessing] cases): they run no native code of ours, and their forks while
# multiprocessing's feeder thread allocates can deadlock the child inside ASan's
# allocator, which is not fork-safe in this compiler's runtime.
SANITIZE_TESTS = tests/test_segment.py tests/test_liveness.py tests/test_lifetime.py \
	tests/test_loans.py $(wildcard tests/test_channel_*.py tests/test_queue_*.py tests/test_topic_*.py \
	tests/test_sync_*.py tests/test_arrays*.py tests/test_aio*.py)
SANITIZER_LIBS = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
sanitize: $(STAMP)
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR) && cp -r src/shmring $(ASAN_DIR)/ && cp -r include $(ASAN_DIR)/shmring/ && rm -f $(ASAN_DIR)/shmring/*.so
	SHMRING_SANITIZE=1 $(PY) setup.py --quiet build_ext --build-lib $(ASAN_DIR) --build-temp $(ASAN_DIR)/tmp
	LD_PRELOAD="$(SANITIZER_LIBS)" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$(ASAN_DIR) \
		$(PY) -m pytest -q -p no:cacheprovider -k "not multiprocessing" $(SANITIZE_TESTS)

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

# libFuzzer targets over the headers (reliability/fuzz/, docs/RELIABILITY.md):
# `make fuzz` runs each for 30 s, `make fuzz FUZZ_LONG=1` each for 2 million
# executions; any crash, sanitizer report or hang fails.  FUZZ_SKIP_KNOWN=1
# builds them stepping around the findings still open (fuzz_common.h).
FUZZ_BIN := build/fuzz/bin$(if $(FUZZ_SKIP_KNOWN),-skip-known)
FUZZ_TARGETS := segment channel queue topic sync
FUZZ_CFLAGS := -g -O1 -std=c11 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	$(if $(FUZZ_SKIP_KNOWN),-DFZ_SKIP_KNOWN)
$(FUZZ_BIN)/fuzz_%: reliability/fuzz/fuzz_%.c reliability/fuzz/fuzz_common.h include/shmring.h $(wildcard include/shmring/*.h)
	@mkdir -p $(FUZZ_BIN)
	clang $(FUZZ_CFLAGS) -Iinclude $< -o $@
fuzz: $(addprefix $(FUZZ_BIN)/fuzz_,$(FUZZ_TARGETS))
	$(PYTHON) reliability/fuzz/run.py --bin $(FUZZ_BIN) $(if $(FUZZ_LONG),--long)
# Refresh the seed corpus from what the last runs found.
fuzz-seeds: $(addprefix $(FUZZ_BIN)/fuzz_,$(FUZZ_TARGETS))
	$(PYTHON) reliability/fuzz/run.py --bin $(FUZZ_BIN) --merge

# Live processes on a channel, a queue and a topic while another one writes
# random bytes into their segments (reliability/mutate.py): 60 s by
# default, MUTATE_LONG=1 for 15 min; MUTATE_ASAN=1 against the build of
# `make sanitize` (build/asan); MUTATE_SKIP_KNOWN=1 does not fail on the
# findings still open; MUTATE_BURST=N makes N writes into each object per
# round, MUTATE_SECONDS=S runs S seconds.
mutate: $(STAMP)
	$(PY) reliability/mutate.py $(if $(MUTATE_LONG),--long) $(if $(MUTATE_ASAN),--asan) \
		$(if $(MUTATE_SKIP_KNOWN),--skip-known) $(if $(MUTATE_BURST),--burst $(MUTATE_BURST)) \
		$(if $(MUTATE_SECONDS),--seconds $(MUTATE_SECONDS))

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info src/shmring/*.so
