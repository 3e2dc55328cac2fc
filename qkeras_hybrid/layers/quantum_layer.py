"""QuantumLayer: a parameterized circuit as a Keras 3 layer."""

import math

import keras
import numpy as np
from keras.src.utils import naming
import tensorflow as tf

from qkeras_hybrid import backends, differentiators
from qkeras_hybrid import noise as noise_lib
from qkeras_hybrid.backends import tfq as tfq_backend
from qkeras_hybrid.backends._validation import check_num_qubits
from qkeras_hybrid.circuits import serialization
from qkeras_hybrid.circuits import compiled as compiled_lib
from qkeras_hybrid.circuits import noisy as noisy_lib
from qkeras_hybrid.circuits.compiled import CompiledCircuit, _as_list, _symbol
from qkeras_hybrid.layers import _checks
from qkeras_hybrid.layers._seeds import SeedStateMixin

BACKENDS = backends.BACKENDS


def _names(symbols):
    return [str(_symbol(s)) for s in symbols]


SHOT_DIFFERENTIATORS = ("parameter_shift", "adjoint", "finite_difference")


def shot_differentiator(differentiator, layer):
    """The gradient method of a sampled native layer: a name or a `FiniteDifference` (its step)."""
    if differentiator is None:
        return "parameter_shift"
    if isinstance(differentiator, dict) and differentiator.get("name") == "finite_difference":
        differentiator = differentiators.FiniteDifference(differentiator["shift"])
    if isinstance(differentiator, differentiators.FiniteDifference) or differentiator in SHOT_DIFFERENTIATORS:
        return differentiator
    raise ValueError(
        f"{layer} with shots: differentiator must be one of {SHOT_DIFFERENTIATORS} or "
        f"qkeras_hybrid.differentiators.FiniteDifference(step), got {differentiator!r}"
    )


def shot_differentiator_to_config(differentiator):
    if isinstance(differentiator, differentiators.FiniteDifference):
        return differentiators.to_config(differentiator)
    return differentiator


def check_shots(shots, seed, backend, layer):
    """(shots, seed) as ints or None; shots only on the native backend."""
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1):
        raise ValueError(f"{layer}: shots must be None (exact expectations) or a positive integer, got {shots!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"{layer}: seed must be an integer or None, got {seed!r}")
    if shots is not None and backend != "native":
        raise ValueError(f"{layer}: shots= is for backend='native'; TFQ samples with repetitions=")
    return (None if shots is None else int(shots)), (None if seed is None else int(seed))


def check_noisy_shots(noisy, shots, layer):
    """Shots of a noisy circuit are drawn from its density matrix, not from trajectories."""
    if noisy is not None and shots is not None and noisy.simulation != "density_matrix":
        raise ValueError(
            f"{layer}: shots with noise need simulation='density_matrix'; this circuit would run as trajectories "
            f"({noisy.num_qubits} qubits, simulation='auto' switches at {noisy_lib.AUTO_DENSITY_MAX_QUBITS})")


def noise_config(noise, simulation, trajectories):
    """The config entries of a layer's noise= (a JSON-able `NoiseSpec` config), simulation= and trajectories=."""
    return {"noise": None if noise is None else noise.get_config(), "simulation": simulation,
            "trajectories": trajectories}


def resolve_symbols(circuit, input_symbols, weight_symbols):
    """(input symbol names, weight symbol names) of a layer on `circuit`; weights
    default to the circuit's other symbols, sorted."""
    inputs = _names(input_symbols)
    circuit_symbols = [str(s) for s in compiled_lib.circuit_symbols(circuit)]
    unknown = [s for s in inputs if s not in circuit_symbols]
    if unknown:
        raise ValueError(f"input_symbols {unknown} do not appear in the circuit (its symbols: {circuit_symbols})")
    if weight_symbols is None:
        weight_symbols = sorted(s for s in circuit_symbols if s not in inputs)
    weights = _names(weight_symbols)
    both = sorted(set(inputs) & set(weights))
    if both:
        raise ValueError(f"Symbols {both} are given both as input_symbols and weight_symbols")
    return inputs, weights

def _register_size(circuit, qubits):
    if qubits is not None:
        return len(qubits)
    if compiled_lib.is_qiskit_circuit(circuit):
        return circuit.num_qubits
    return len(circuit.all_qubits()) if hasattr(circuit, "all_qubits") else 0


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class QuantumLayer(SeedStateMixin, keras.layers.Layer):
    """Expectation values of observables of a parameterized quantum circuit.

    Some of the circuit's symbols take the layer's inputs (data encoding), the
    others become trainable weights. The circuit is compiled once, into the
    numeric program the native C++ simulator runs; gradients with respect to
    the weights and the inputs come from the adjoint method, so the layer can
    sit anywhere in a network. With `backend="tfq"` the same circuit runs on
    TensorFlow Quantum's ops instead, with TFQ's differentiators, exact or
    sampled.

    Args:
      circuit: a `cirq.Circuit` with sympy symbols, or a
        `qiskit.QuantumCircuit` with `Parameter`s (run on the same simulator).
      observables: one or a list of observables: `cirq.PauliSum` /
        `cirq.PauliString` for Cirq circuits, `SparsePauliOp` for Qiskit ones.
        One output column per observable.
      input_symbols: the symbols fed by the inputs, in input-column order.
      weight_symbols: the trainable symbols. Defaults to every other symbol of
        the circuit, sorted by name.
      backend: `"native"` (the C++ op, adjoint gradients) or `"tfq"`
        (TensorFlow Quantum's ops; Cirq circuits only, float32 inside).
      differentiator: `"tfq"`: a `tfq.differentiators` object (`Adjoint`,
        the default, `ParameterShift`, `ForwardDifference`,
        `CentralDifference`, `LinearCombination`), stored in the config by
        class name and arguments. Native with `shots`: `"parameter_shift"`
        (the default: each gate's shift rule, generalized for generators
        with more than two eigenvalues, estimated with the same shots, as
        hardware would; unbiased), `"finite_difference"` (step 0.01) or
        `qkeras_hybrid.differentiators.FiniteDifference(step)`, or
        `"adjoint"` (the exact gradient of the analytic expectation: a
        simulator's privilege, no shot noise). Native without shots: None
        (exact adjoint gradients).
      repetitions: `"tfq"` only: None for exact expectations, or the number
        of shots per observable term (sampled expectations; needs a
        differentiator other than `Adjoint`).
      initializer: initializer of the weights (default uniform in [0, 2 pi)).
      regularizer: optional regularizer of the weights.
      constraint: optional constraint of the weights.
      qubits: Cirq only: the register order (default: sorted circuit qubits).
      shots: native only: None for exact expectations, or the number of
        measurements per batch row of each qubit-wise commuting group of
        Pauli terms (terms that act on each qubit with the same Pauli or the
        identity share them): a `PauliSum` costs `shots` times its number of
        such groups (identity terms are exact). All shifted circuits
        of a gradient go to the simulator in one call (2 per two-eigenvalue
        gate per batch row).
      seed: with `shots` or trajectories: an int gives the same sequence of
        outputs (and gradients) in a fresh process; None a different one
        every run. The seed state is a `keras.random.SeedGenerator` variable
        advanced once per call; `.keras` files and SavedModels save it, so a
        reloaded model continues the sequence where the saved one stood.
      noise: native only: None (ideal), a `cirq.NoiseModel` (applied exactly
        as `circuit.with_noise(model)`), a per-gate table such as
        `{"ry": cirq.depolarize(0.01), "cx": cirq.depolarize(0.02, n_qubits=2)}`
        or `qkeras_hybrid.noise.GateNoise(...)` (a channel after each gate of
        a kind, with optional readout errors), or a
        `qiskit_aer.noise.NoiseModel` (e.g. `NoiseModel.from_backend(...)`),
        converted with Aer's semantics. Channels written into the circuit
        itself (`cirq.depolarize(p).on(q)`, `cirq.amplitude_damp`, ...) are
        noise too. Readout errors act on sampled expectations (`shots`), not
        on exact ones. Saved in the config.
      simulation: for a noisy circuit: `"density_matrix"` (exact values and
        exact adjoint gradients: rho as a vector on 2n qubits),
        `"trajectories"` (Monte-Carlo trajectories: unbiased estimates of the
        values and of their gradients, `trajectories` per batch row) or
        `"auto"` (the default: the density matrix up to 12 qubits, then
        trajectories).
      trajectories: trajectories per batch row (default 100; the standard
        error of a value is about its spread over trajectories / sqrt(N)).

    Input shape:
      `(batch, len(input_symbols))`, real values (floats or integers). A
      layer without input symbols takes any input and uses only its batch
      size. Inputs and weights must be finite.

    Output shape:
      `(batch, len(observables))`, in the layer's compute dtype. Under a
      mixed-precision policy (`"mixed_float16"`, `"mixed_bfloat16"`) the
      circuit is still simulated in float32 (weights stay float32) and only
      the output is cast to 16 bits.

    Example:

    >>> import cirq, sympy, keras
    >>> q = cirq.LineQubit(0)
    >>> x, w = sympy.symbols("x w")
    >>> layer = QuantumLayer(cirq.Circuit(cirq.rx(x)(q), cirq.ry(w)(q)),
    ...                      cirq.Z(q), input_symbols=[x])
    >>> layer(keras.ops.zeros((3, 1))).shape
    TensorShape([3, 1])
    """

    def __init__(
        self,
        circuit,
        observables,
        input_symbols=(),
        weight_symbols=None,
        backend="native",
        differentiator=None,
        initializer=None,
        regularizer=None,
        constraint=None,
        qubits=None,
        repetitions=None,
        shots=None,
        seed=None,
        noise=None,
        simulation="auto",
        trajectories=None,
        **kwargs,
    ):
        _checks.require_tensorflow_backend(self)
        self.shots, self.seed = check_shots(shots, seed, backend, type(self).__name__)
        self.simulation, self.trajectories = noisy_lib.check_simulation(simulation, trajectories,
                                                                        type(self).__name__)
        circuit = serialization.circuit_from_config(circuit)
        self.noise = noise_lib.resolve(noise, _register_size(circuit, qubits))
        if self.noise is not None and backend != "native":
            raise ValueError(f"{type(self).__name__}: noise= runs on backend='native' (the density-matrix and "
                             f"trajectory simulator), got backend={backend!r}")
        observables = serialization.observables_from_config(_as_list(observables))
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        # Before compiling: a register that cannot fit in memory fails here, not when called.
        check_num_qubits(_register_size(circuit, qubits), backend, type(self).__name__)
        if self.shots is not None:
            differentiator = shot_differentiator(differentiator, type(self).__name__)
        else:
            differentiator = tfq_backend.differentiator_from_config(differentiator)
        self.circuit = circuit
        self.observables = observables
        self.qubits = list(qubits) if qubits is not None else None
        self.input_symbols, self.weight_symbols = resolve_symbols(circuit, input_symbols, weight_symbols)
        symbols = [_symbol(s) for s in self.input_symbols + self.weight_symbols]
        # The native program is compiled for backend="native" only: TFQ checks
        # the circuit itself, and its errors then speak of TFQ.
        self.compiled = (
            CompiledCircuit(circuit, observables, symbols=symbols, qubits=self.qubits, noise=self.noise,
                            simulation=self.simulation, trajectories=self.trajectories)
            if backend == "native" else None
        )
        self._noisy = getattr(self.compiled, "noisy", None)
        noisy_lib.check_density_memory(self._noisy, type(self).__name__)
        check_noisy_shots(self._noisy, self.shots, type(self).__name__)
        self.backend = backend
        self.differentiator = differentiator
        self.repetitions = repetitions
        self.executor = backends.make_executor(
            backend, circuit, observables, symbols, qubits=getattr(self.compiled, "qubits", self.qubits),
            differentiator=None if self.shots is not None else differentiator, repetitions=repetitions,
            compiled=self.compiled,
        )
        num_qubits = self.compiled.num_qubits if self.compiled is not None else len(self.executor.qubits)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomUniform(0.0, 2.0 * math.pi)
        )
        self.regularizer = keras.regularizers.get(regularizer)
        self.constraint = keras.constraints.get(constraint)
        if "name" not in kwargs:  # e.g. "quantum_layer_4q" in model.summary()
            kwargs["name"] = naming.auto_name(f"{naming.to_snake_case(type(self).__name__)}_{num_qubits}q")
        super().__init__(**kwargs)
        if self.shots is not None or (self._noisy is not None and self._noisy.needs_seed):
            self._seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")
        self.num_qubits = num_qubits
        self.num_observables = self.executor.num_observables
        # What a bad value is called in errors: inputs[row, j] and its symbol, or a weight.
        self._value_labels = (
            [(f"{self.name}: inputs[", f", {j}] (input symbol {name})") for j, name in enumerate(self.input_symbols)]
            + [(f"{self.name}: weight {name} (quantum_weights[{k}])", "") for k, name in enumerate(self.weight_symbols)]
        )

    @property
    def input_dtype(self):
        # Float inputs are cast to the simulation dtype (float32 under mixed precision), not to float16.
        return _checks.internal_dtype(self.compute_dtype)

    def build(self, input_shape):
        if self.input_symbols:
            _checks.check_feature_shape(self, input_shape, self.input_symbols)
        self.quantum_weights = self.add_weight(
            name="quantum_weights",
            shape=(len(self.weight_symbols),),
            initializer=self.initializer,
            regularizer=self.regularizer,
            constraint=self.constraint,
            autocast=False,  # angles stay float32 under mixed precision
        )

    def call(self, inputs):
        values = self._symbol_values(tf.convert_to_tensor(inputs))
        return self._expectation(values)

    def _expectation(self, symbol_values, programs=None):
        """The executor's expectations at the simulation dtype, returned in the compute dtype."""
        if self.shots is not None:
            if programs is not None:
                raise NotImplementedError(f"{self.name}: shots with circuit inputs (quantum data) are not supported")
            outputs = self.compiled.sampled_expectation(symbol_values, self.shots, self._seed_generator.next(),
                                                        self.differentiator, dtype=symbol_values.dtype)
        elif self._noisy is not None:
            if programs is not None:
                raise NotImplementedError(f"{self.name}: noise with circuit inputs (quantum data) is not supported")
            seed = self._seed_generator.next() if self._noisy.needs_seed else None
            outputs = self.compiled.expectation(symbol_values, dtype=symbol_values.dtype, seed=seed)
        else:
            outputs = self.executor.expectation(symbol_values, dtype=symbol_values.dtype, programs=programs)
        return outputs if outputs.dtype.name == self.compute_dtype else tf.cast(outputs, self.compute_dtype)

    def _symbol_values(self, inputs, batch=None):
        """[batch, S]: the input columns, then the weights tiled over the batch, checked.

        `inputs` may be None (no input symbols) when `batch` is given.
        """
        dtype = self.input_dtype
        if self.input_symbols:
            _checks.check_real_dtype(self, inputs)
            inputs = _checks.check_features(self, inputs, self.input_symbols)
        elif batch is None and inputs.shape.rank == 0:
            raise ValueError(f"{self.name} has no input_symbols and takes inputs only for their batch size, "
                             "so it needs inputs with a batch dimension; got a scalar")
        if batch is None:
            # A Python int where the shape is known (always, eagerly): no slicing op.
            batch = inputs.shape[0] if inputs.shape[0] is not None else tf.shape(inputs)[0]
        weights = tf.convert_to_tensor(self.quantum_weights)
        if weights.dtype != dtype:
            weights = tf.cast(weights, dtype)
        shape = [batch, len(self.weight_symbols)]
        values = tf.broadcast_to(weights, shape if isinstance(batch, int) else tf.stack(shape))
        if self.input_symbols:
            values = tf.concat([tf.cast(inputs, dtype), values], axis=1)
        return _checks.check_finite(values, self._describe_value)

    def _describe_value(self, index):
        """The name of symbol value [row, column] in the layer's terms."""
        before, after = tf.unstack(tf.gather(tf.constant(self._value_labels), index[1]))
        row = tf.where(index[1] < len(self.input_symbols), tf.strings.as_string(index[0]), "")
        return tf.strings.join([before, row, after])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_observables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "circuit": serialization.circuit_to_config(self.circuit),
                "observables": serialization.observables_to_config(self.observables),
                "input_symbols": list(self.input_symbols),
                "weight_symbols": list(self.weight_symbols),
                "backend": self.backend,
                "differentiator": (shot_differentiator_to_config(self.differentiator) if self.shots is not None
                                   else tfq_backend.differentiator_to_config(self.differentiator)),
                "repetitions": self.repetitions,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "constraint": keras.constraints.serialize(self.constraint),
                "qubits": None if self.qubits is None else [serialization.qubit_to_config(q) for q in self.qubits],
                "shots": self.shots,
                "seed": self.seed,
                **noise_config(self.noise, self.simulation, self.trajectories),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("qubits") is not None:
            config["qubits"] = [serialization.qubit_from_config(q) for q in config["qubits"]]
        return cls(**config)
