# `make test` and `make demo` set up .venv from scratch when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
OP := qkeras_hybrid/ops/_qkeras_hybrid_ops.so
OP_SOURCES := $(wildcard custom_ops/tf/*.cc custom_ops/simulator/*.h) setup.py
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: build test demo bench bench-peers clean

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

clean:
	rm -rf $(VENV) build *.egg-info $(OP) qkeras_hybrid/ops/_build_info.json
