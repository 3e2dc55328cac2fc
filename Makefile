# `make test` and `make demo` set up .venv from scratch when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
OP := qkeras_hybrid/ops/_qkeras_hybrid_ops.so
OP_SOURCES := $(wildcard custom_ops/tf/*.cc custom_ops/tf/*.h custom_ops/simulator/*.h) custom_ops/build_op.py setup.py
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: build test demo bench bench-peers bench-noise clean fuzz sanitize

$(DEPS): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The package's own build compiles the op (setup.py, flags from tf.sysconfig).
$(OP): $(DEPS) $(OP_SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

build: $(OP)

test: build
	$(PY) -m pytest -n 2 -q

demo: build
	$(PY) examples/hybrid_mnist.py

bench: build
	$(PY) benchmarks/op_bench.py
	$(PY) benchmarks/hqcnn_bench.py
	$(PY) benchmarks/qiskit_layer_bench.py
	$(PY) benchmarks/qconv_bench.py

# Noisy circuits: ours (density matrix, trajectories) vs TFQ's noise backend and Aer.
bench-noise: build
	$(PY) benchmarks/noise_bench.py

# The peer benchmark (JAX, tensorcircuit-ng, PennyLane) in its own pinned
# environment; ours and TFQ run in .venv. Not part of `make test`.
PEERS_VENV := .venv-peers
PEERS_DEPS := $(PEERS_VENV)/.deps-installed

$(PEERS_DEPS): benchmarks/requirements-peers.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-peers.txt
	touch $@

bench-peers: build $(PEERS_DEPS)
	$(PY) benchmarks/peers_bench.py $(PEERS_ARGS)

# The raw-op fuzzer (tests/fuzz_ops.py) for SECONDS seconds; crashes are
# saved under FUZZ_REPROS. `make test` runs about two minutes of it.
SECONDS ?= 600
FUZZ_REPROS ?= fuzz_repros
fuzz: build
	$(PY) tests/fuzz_ops.py --seconds $(SECONDS) --repro-dir $(FUZZ_REPROS) $(if $(SEED),--seed $(SEED))

# The op built with AddressSanitizer + UBSan in its own directory (the
# installed op is untouched), then the op tests and a fuzz run against it.
# Python is not instrumented: the ASan runtime is preloaded; leak checking
# would report the interpreter's own allocations.
SANITIZED_OP := build/sanitize/_qkeras_hybrid_ops.so
SANITIZE_FUZZ_SECONDS ?= 100
SANITIZE_ENV = QKERAS_HYBRID_OP_LIBRARY=$(abspath $(SANITIZED_OP)) \
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:alloc_dealloc_mismatch=0:new_delete_type_mismatch=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
$(SANITIZED_OP): $(DEPS) $(OP_SOURCES)
	CXX=$(CXX) $(PY) custom_ops/build_op.py --sanitize --out $@

sanitize: $(SANITIZED_OP)
	$(SANITIZE_ENV) $(PY) -m pytest -n 2 -q -p no:cacheprovider tests/test_op_safety.py tests/test_from_state.py tests/test_gradients.py \
		tests/test_final_state_grad.py tests/test_measure_ops.py
	$(SANITIZE_ENV) $(PY) tests/fuzz_ops.py --seconds $(SANITIZE_FUZZ_SECONDS) --seed 0 --repro-dir $(FUZZ_REPROS)

clean:
	rm -rf $(VENV) build *.egg-info $(OP) qkeras_hybrid/ops/_build_info.json
