"""The TensorFlow Quantum executor: our circuits on TFQ's ops and differentiators.

TFQ's *layers* are Keras 2 layers, but its ops are plain TF ops, so a Keras 3
layer can call them. The circuit is converted to TFQ's serialized form once;
each call only tiles it over the batch and feeds symbol values.

TFQ accepts only `symbol` or `constant * symbol` as a gate parameter. Any other
sympy expression (`2*a + b`, `sin(a)`, `a*b`) is rewritten into a fresh symbol
(`cirq.flatten`) whose value our `AngleMap` computes from the layer's symbols
in TF, so TF's chain rule still differentiates through it and TFQ's
differentiator only sees plain symbols.
"""

import copy
import glob
import importlib.util
import os
import re

import cirq
import numpy as np
import tensorflow as tf

from qkeras_hybrid.backends._validation import check_finite, check_num_qubits
from qkeras_hybrid.circuits import observables as obs_lib
from qkeras_hybrid.circuits.angles import AngleMap
from qkeras_hybrid.circuits.cirq_compiler import describe_operation
from qkeras_hybrid.circuits.compiled import check_symbol_names

INSTALL_HINT = (
    "Install TensorFlow Quantum for this TensorFlow (`pip install tensorflow-quantum==0.7.6` "
    "with tensorflow 2.18.x)"
)

# TFQ's differentiators, stored in configs by class name and constructor arguments.
DIFFERENTIATORS = ("Adjoint", "CentralDifference", "ForwardDifference", "LinearCombination", "ParameterShift")


class TFQNotAvailableError(ImportError):
    """TensorFlow Quantum (its Python package or its op library) is missing."""


def require_tfq(what="backend='tfq'"):
    """Imports tensorflow_quantum or raises a TFQNotAvailableError saying what to do."""
    try:
        import tensorflow_quantum as tfq
    except ImportError as e:
        raise TFQNotAvailableError(f"{what} needs TensorFlow Quantum, which could not be imported ({e}). "
                                   f"{INSTALL_HINT}.") from e
    return tfq


def register_tfq_ops():
    """Registers TFQ's op libraries with TF, without importing its Python package.

    A SavedModel exported from a tfq-backend layer contains TFQ's ops; loading
    their shared libraries is what lets `tf.saved_model.load` find them.
    Returns None on success, else why it failed (TFQ not installed, ABI...).
    """
    try:
        spec = importlib.util.find_spec("tensorflow_quantum")
    except (ImportError, ValueError):  # e.g. blocked in sys.modules
        spec = None
    if spec is None or spec.origin is None:
        return "tensorflow_quantum is not installed"
    libraries = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "core", "ops", "**", "*.so"),
                                 recursive=True))
    if not libraries:
        return f"no op libraries found under {os.path.dirname(spec.origin)}"
    try:
        for path in libraries:
            tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
        return f"TFQ's op library {path} does not load into TensorFlow {tf.__version__}: {e}"
    return None


_UNREGISTERED = re.compile(r"Op type not registered '(Tfq\w+)'")


def load_saved_model(export_dir, **kwargs):
    """`tf.saved_model.load`, with a clear error when TFQ's ops are missing.

    A SavedModel exported from a `backend="tfq"` layer contains TensorFlow
    Quantum's ops, so the loading process needs TFQ's op library (`import
    qkeras_hybrid` registers it when TFQ is installed). Without it TF says
    "Op type not registered 'TfqSimulateExpectation'"; this raises a
    `TFQNotAvailableError` that says what to install instead.
    """
    try:
        return tf.saved_model.load(export_dir, **kwargs)
    except Exception as e:  # TF raises NotFoundError or ValueError depending on where it fails
        missing = _UNREGISTERED.search(str(e))
        if missing is None:
            raise
        raise TFQNotAvailableError(
            f"The SavedModel {export_dir} uses TensorFlow Quantum's op {missing.group(1)} (it was exported from "
            f"a layer with backend='tfq'), but TFQ's op library is not loaded in this process. {INSTALL_HINT}, "
            "then `import qkeras_hybrid` (or `import tensorflow_quantum`) before loading it."
        ) from e


# ------------------------------------------------------------- differentiators


def differentiator_to_config(differentiator):
    """{"class_name", "config"} for one of TFQ's own differentiators, else ValueError."""
    if differentiator is None:
        return None
    tfq = require_tfq("A TFQ differentiator")
    name = type(differentiator).__name__
    if name not in DIFFERENTIATORS or type(differentiator) is not getattr(tfq.differentiators, name):
        raise ValueError(
            f"Cannot save differentiator {type(differentiator).__module__}.{type(differentiator).__qualname__}: "
            f"only TFQ's own {list(DIFFERENTIATORS)} can be stored in a layer config"
        )
    if name == "ForwardDifference":
        config = {"error_order": int(differentiator.error_order), "grid_spacing": float(differentiator.grid_spacing)}
    elif name in ("CentralDifference", "LinearCombination"):
        # TFQ keeps only the float32 weights and perturbations; the shortest
        # float32 repr gives back the numbers the user wrote (0.001, not 0.0010000000475).
        perturbations = [float(str(p)) for p in np.asarray(differentiator.perturbations, np.float32)]
        if name == "CentralDifference":
            order = len(perturbations)
            spacing = np.float32(max(perturbations) / (order // 2))
            config = {"error_order": order, "grid_spacing": float(str(spacing))}
        else:
            weights = [float(str(w)) for w in np.asarray(differentiator.weights, np.float32)]
            config = {"weights": weights, "perturbations": perturbations}
    else:
        config = {}
    return {"class_name": name, "config": config}


def differentiator_from_config(config):
    """A fresh TFQ differentiator from `differentiator_to_config`'s output (or an instance)."""
    if config is None or not isinstance(config, dict):
        return config
    tfq = require_tfq("Restoring a TFQ differentiator")
    name = config.get("class_name")
    if name not in DIFFERENTIATORS:
        raise ValueError(f"Unknown differentiator {name!r} in a saved config: expected one of "
                         f"{list(DIFFERENTIATORS)}")
    return getattr(tfq.differentiators, name)(**config.get("config", {}))


def _fresh_differentiator(differentiator):
    """TFQ allows one op per differentiator object, so each layer uses its own copy."""
    tfq = require_tfq()
    if differentiator is None:
        return tfq.differentiators.Adjoint()
    if not isinstance(differentiator, tfq.differentiators.Differentiator):
        raise TypeError(f"differentiator must be a tfq.differentiators.Differentiator, got {differentiator!r}")
    try:
        fresh = differentiator_from_config(differentiator_to_config(differentiator))
    except ValueError:  # a custom subclass: usable, though not storable
        fresh = copy.copy(differentiator).refresh()
    # LinearCombination keeps its coefficients as eager tensors, which its
    # gradient function captures; a SavedModel refuses eager captures in
    # custom gradients ("Found invalid capture"), numpy constants are inlined.
    for name, value in list(vars(fresh).items()):
        if isinstance(value, tf.Tensor) and hasattr(value, "numpy"):
            setattr(fresh, name, value.numpy())
    return fresh


# ------------------------------------------------------------------- circuits


def _tfq_serializable(op):
    """Whether TFQ's serializer takes this op (with its symbols set to numbers)."""
    from tensorflow_quantum.core.serialize import serializer

    if cirq.is_measurement(op) or not op.qubits:  # global phases are dropped afterwards
        return True
    resolved = cirq.resolve_parameters(op, {s: 0.25 for s in cirq.parameter_symbols(op)})
    try:
        serializer.serialize_circuit(cirq.Circuit(resolved))
    except Exception:  # TFQ raises ValueError, TypeError or KeyError
        return False
    return True


def tfq_circuit(circuit, qubits):
    """The circuit in TFQ's gate set, with plain symbols, on the whole register.

    Returns (circuit, {fresh_symbol: expression}).
    """
    stray = sorted(set(circuit.all_qubits()) - set(qubits), key=str)
    if stray:
        raise ValueError(f"The circuit acts on qubits {stray} outside the register {list(qubits)}")
    bad_kind = [q for q in qubits if not isinstance(q, (cirq.LineQubit, cirq.GridQubit))]
    if bad_kind:
        raise ValueError(f"backend='tfq' supports only cirq.LineQubit and cirq.GridQubit, got {bad_kind}")

    def on_stuck(op):
        if cirq.has_unitary(op) or cirq.is_parameterized(op):
            hint = "backend='native' may run it"
        elif cirq.has_kraus(op):
            hint = "it is a non-unitary channel (noise, reset, ...); these layers run unitary circuits only"
        else:
            hint = "it has no unitary (_unitary_) and no decomposition (_decompose_): give the gate one of them"
        return ValueError(f"backend='tfq': TensorFlow Quantum cannot run the gate {describe_operation(op)}, and "
                          f"Cirq cannot decompose it into TFQ's gate set; {hint}")

    # Global phases do not change expectation values, and TFQ has no such gate.
    ops = cirq.decompose(circuit.all_operations(), keep=_tfq_serializable, on_stuck_raise=on_stuck)
    ops = [op for op in ops if op.qubits]
    # Identities on every register qubit: TFQ simulates only the qubits a
    # circuit touches, and observables or appended data may use the others.
    prepared = register_qubits_program(qubits) + cirq.Circuit(ops)
    flat, expressions = cirq.flatten(prepared)
    return flat, {new: expr for expr, new in expressions.items()}


def register_qubits_program(qubits):
    """A circuit of identities on every register qubit (fixes TFQ's qubit set)."""
    return cirq.Circuit(cirq.I(q) for q in qubits)


class TFQExecutor:
    """Expectations of one circuit on TFQ's simulator ops.

    Args:
      circuit: a `cirq.Circuit`.
      observables: list of `cirq.PauliSum` / `cirq.PauliString`.
      symbols: the order of the symbol values fed at run time.
      qubits: the register (default: the circuit's qubits, sorted).
      differentiator: a `tfq.differentiators` object (default `Adjoint()`).
      repetitions: None for exact expectations, or the number of shots per
        observable term for sampled ones.
    """

    name = "tfq"

    def __init__(self, circuit, observables, symbols, qubits=None, differentiator=None, repetitions=None):
        tfq = require_tfq()
        if not isinstance(circuit, cirq.Circuit):
            raise TypeError(f"backend='tfq' runs Cirq circuits, got a {type(circuit).__name__}; "
                            "use backend='native' for Qiskit circuits")
        if repetitions is not None:
            if isinstance(repetitions, bool) or not isinstance(repetitions, (int, np.integer)) or repetitions <= 0:
                raise ValueError(f"repetitions must be None (exact) or a positive int, got {repetitions!r}")
            repetitions = int(repetitions)
        self.repetitions = repetitions
        self.qubits = list(qubits) if qubits is not None else sorted(circuit.all_qubits())
        # TFQ does not check its allocations: a register too big crashes the process.
        check_num_qubits(len(self.qubits), "tfq", "backend='tfq'")
        index_of = {q: i for i, q in enumerate(self.qubits)}
        for observable in observables:  # same rules as the native backend, before TFQ sees them
            obs_lib.cirq_terms(observable, index_of)
        self.symbols = list(symbols)
        names = [str(s) for s in self.symbols]
        circuit_names = sorted(str(s) for s in cirq.parameter_symbols(circuit))
        check_symbol_names(names, circuit_names)
        missing = sorted(set(circuit_names) - set(names))
        if missing:
            raise ValueError(f"Circuit symbols {missing} are not given values: add them to `symbols`")
        flat, expressions = tfq_circuit(circuit, self.qubits)
        # Run-time symbol values: the layer's symbols, then the rewritten expressions.
        self.angle_map = AngleMap(list(expressions.values()), self.symbols)
        self.symbol_names = [str(s) for s in self.symbols] + [str(s) for s in expressions]
        self.circuit = flat
        self.num_observables = len(observables)
        self.differentiator = _fresh_differentiator(differentiator)
        if repetitions is not None and isinstance(self.differentiator, tfq.differentiators.Adjoint):
            raise ValueError("The Adjoint differentiator needs exact expectations; with repetitions=... pass e.g. "
                             "differentiator=tfq.differentiators.ParameterShift()")
        if repetitions is None:
            self._op = self.differentiator.generate_differentiable_op(analytic_op=tfq.get_expectation_op())
        else:
            self._op = self.differentiator.generate_differentiable_op(
                sampled_op=tfq.get_sampled_expectation_op())
        with tf.init_scope():  # eager constants, captured by any graph that uses them
            self._program = tfq.convert_to_tensor([flat])
            self._pauli_sums = tfq.convert_to_tensor([[cirq.PauliSum.wrap(o) for o in observables]])
            self._symbol_names = tf.constant(self.symbol_names, dtype=tf.string)
            self._repetitions = None if repetitions is None else tf.fill([1, len(observables)], repetitions)

    def expectation(self, symbol_values, dtype=tf.float32, programs=None):
        """<O_o> per row of symbol values [B, S] -> [B, O]; differentiable.

        `programs`: optional [B] TFQ circuit strings (quantum data) run before
        this executor's circuit, one per row.
        """
        tfq = require_tfq()
        values = tf.cast(tf.convert_to_tensor(symbol_values), tf.float32)  # TFQ's ops are float32
        batch = tf.shape(values)[0]
        program = tf.tile(self._program, [batch])
        if programs is not None:
            program = tfq.append_circuit(tf.convert_to_tensor(programs, tf.string), program)
        pauli_sums = tf.tile(self._pauli_sums, tf.stack([batch, 1]))
        # TFQ returns NaN for NaN angles without a word: check them first.
        angles = check_finite(self.angle_map(values), self._describe_value)
        args = (program, self._symbol_names, angles, pauli_sums)
        if self._repetitions is not None:
            args += (tf.tile(self._repetitions, tf.stack([batch, 1])),)
        return tf.cast(self._op(*args), dtype)

    def _describe_value(self, index):
        """"backend=tfq: the value of symbol x in row 3" for index [row, column] (no quotes: Assert escapes them)."""
        name = tf.gather(tf.constant(self.symbol_names), index[1])
        return tf.strings.join(["backend=tfq: the value of symbol ", name, " in row ", tf.strings.as_string(index[0])])
