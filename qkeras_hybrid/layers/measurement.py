"""Measurement layers: probabilities, samples and states of a parameterized circuit.

They share `QuantumLayer`'s inputs, weights, checks and saving, and differ
only in the read-out they ask the native simulator for (qkeras_hybrid.ops.measure).

Bit order: Cirq's. The first listed qubit is the most significant bit of a
basis-state index (`ProbabilityLayer`, `StateLayer`), and bit `j` of a
sample is `qubits[j]` (`SampleLayer`), as `cirq.Simulator` and TFQ have it.

Randomness: a layer that samples or runs trajectories owns a
`keras.random.SeedGenerator`, whose state (an int64 `[2]` variable) is the
seed of each call and advances by one per call, eagerly, in a `tf.function`,
in `fit` and in an exported SavedModel. `seed=int` gives the same sequence of
outputs in a fresh process; `seed=None` a different one every run. The state
is a (non-trainable) variable of the layer, saved in SavedModels and (by
`_seeds.SeedStateMixin`, as Keras saves no seed generator's state) in `.keras`
files: a reloaded model continues the sequence where the saved one stood,
whatever `seed` was.

Noise: a noisy circuit runs as a density matrix (exact) or as trajectories
(`simulation=`, as `QuantumLayer`): see `qkeras_hybrid.circuits.noisy`.
"""

import math

import cirq
import keras
import numpy as np
import tensorflow as tf
from keras.src.utils import naming

from qkeras_hybrid import noise as noise_lib
from qkeras_hybrid.backends._validation import check_num_qubits
from qkeras_hybrid.circuits import compiled as compiled_lib
from qkeras_hybrid.circuits import noisy as noisy_lib
from qkeras_hybrid.circuits import serialization
from qkeras_hybrid.circuits.compiled import CompiledCircuit, cirq_to_native_order
from qkeras_hybrid.layers import _checks
from qkeras_hybrid.layers._seeds import SeedStateMixin
from qkeras_hybrid.layers.quantum_layer import QuantumLayer, noise_config, resolve_symbols


def _measure_ops():
    # Imported when first used: the ops module registers the op's gradients.
    from qkeras_hybrid.ops import measure

    return measure


def _check_count(value, name, layer):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_seed(value, layer):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ValueError(f"{layer}: seed must be an integer or None, got {value!r}")
    return None if value is None else int(value)


def _register(circuit, measured):
    """The register: Cirq: the circuit's qubits and the measured ones, sorted; Qiskit: None (its qubits)."""
    if compiled_lib.is_qiskit_circuit(circuit):
        return None
    if not isinstance(circuit, cirq.Circuit):
        raise TypeError(f"circuit must be a cirq.Circuit or a qiskit.QuantumCircuit, got {type(circuit).__name__}")
    bad = [q for q in measured or () if not isinstance(q, cirq.Qid)]
    if bad:
        raise TypeError(f"qubits of a Cirq circuit must be cirq.Qid objects, got {bad}")
    return sorted(set(circuit.all_qubits()) | set(measured or ()))


def _placeholder_observable(circuit, register):
    """An observable for `CompiledCircuit`, whose program these read-outs ignore."""
    if register is None:
        from qiskit.quantum_info import SparsePauliOp

        return SparsePauliOp("I" * (circuit.num_qubits - 1) + "Z")
    return cirq.Z(register[0])


def _without_gradient(layer_name, angles, outputs):
    """`outputs`, with an error naming the layer if a gradient flows into them."""

    @tf.custom_gradient
    def attach(angles, outputs):
        def grad(upstream):
            from tensorflow.python.saved_model import save_context

            if save_context.in_save_context():  # SavedModel traces every gradient: export must not fail
                return None, None
            raise ValueError(
                f"{layer_name}: sampled probabilities (shots=...) have no gradient. Use shots=None for exact, "
                "differentiable probabilities, freeze the layer (trainable=False) and stop gradients into its "
                "inputs, or use QuantumLayer(..., shots=...), whose sampled expectations have shift-rule gradients."
            )

        return tf.identity(outputs), grad

    return attach(angles, outputs)


class _MeasurementLayer(SeedStateMixin, keras.layers.Layer):
    """Base: a circuit's symbols fed by inputs and weights, compiled for the native simulator."""

    _takes_qubits = True  # StateLayer returns the whole register
    _takes_noise = True  # StateLayer returns a pure state

    def __init__(
        self,
        circuit,
        qubits=None,
        input_symbols=(),
        weight_symbols=None,
        initializer=None,
        regularizer=None,
        constraint=None,
        noise=None,
        simulation="auto",
        trajectories=None,
        **kwargs,
    ):
        _checks.require_tensorflow_backend(self)
        layer = type(self).__name__
        self.simulation, self.trajectories = noisy_lib.check_simulation(simulation, trajectories, layer)
        if not self._takes_noise and (simulation != "auto" or trajectories is not None):
            raise ValueError(f"{layer}: simulation= and trajectories= are for noisy circuits, which {layer} does "
                             f"not take (got simulation={simulation!r}, trajectories={trajectories!r})")
        circuit = serialization.circuit_from_config(circuit)
        is_qiskit = compiled_lib.is_qiskit_circuit(circuit)
        if qubits is not None:
            qubits = [serialization.qubit_from_config(q) for q in qubits]
        register = _register(circuit, qubits)
        num_qubits = circuit.num_qubits if is_qiskit else len(register)
        if num_qubits == 0:
            raise ValueError(f"{layer}: the circuit has no qubits")
        check_num_qubits(num_qubits, "native", layer)
        # Measured qubits as register indices.
        if qubits is None:
            self.qubits = None
            self._qubit_indices = list(range(num_qubits))
        else:
            if not qubits:
                raise ValueError(f"{layer}: qubits must name at least one qubit, got an empty list")
            if is_qiskit:
                bad = [q for q in qubits if isinstance(q, bool) or not isinstance(q, (int, np.integer))
                       or not 0 <= q < num_qubits]
                if bad:
                    raise ValueError(f"{layer}: qubits of a Qiskit circuit are indices in [0, {num_qubits}), "
                                     f"got {bad}")
                indices = [int(q) for q in qubits]
            else:
                index_of = {q: i for i, q in enumerate(register)}
                indices = [index_of[q] for q in qubits]
            duplicates = sorted({str(q) for q, i in zip(qubits, indices) if indices.count(i) > 1})
            if duplicates:
                raise ValueError(f"{layer}: qubits {duplicates} are listed more than once")
            self.qubits = list(qubits)
            self._qubit_indices = indices
        self.circuit = circuit
        self.input_symbols, self.weight_symbols = resolve_symbols(circuit, input_symbols, weight_symbols)
        symbols = [compiled_lib._symbol(s) for s in self.input_symbols + self.weight_symbols]
        self.noise = noise_lib.resolve(noise, num_qubits)
        # Measurements of a noisy circuit come from its density matrix (2n qubits) or from trajectories.
        self.compiled = CompiledCircuit(
            circuit, _placeholder_observable(circuit, register), symbols=symbols, qubits=register,
            noise=self.noise, simulation=self.simulation, trajectories=self.trajectories,
        )
        self._noisy = self.compiled.noisy
        noisy_lib.check_density_memory(self._noisy, type(self).__name__)
        if self.compiled.noisy is not None and not self._takes_noise:
            raise ValueError(f"{layer}: the circuit has channels (noise), so it has no state vector; use "
                             "ProbabilityLayer or SampleLayer (density-matrix simulation) instead")
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomUniform(0.0, 2.0 * math.pi)
        )
        self.regularizer = keras.regularizers.get(regularizer)
        self.constraint = keras.constraints.get(constraint)
        if "name" not in kwargs:
            kwargs["name"] = naming.auto_name(f"{naming.to_snake_case(type(self).__name__)}_{num_qubits}q")
        super().__init__(**kwargs)
        self.num_qubits = num_qubits
        self._value_labels = (
            [(f"{self.name}: inputs[", f", {j}] (input symbol {name})") for j, name in enumerate(self.input_symbols)]
            + [(f"{self.name}: weight {name} (quantum_weights[{k}])", "") for k, name in enumerate(self.weight_symbols)]
        )

    # Inputs, weights and their checks are QuantumLayer's.
    input_dtype = QuantumLayer.input_dtype
    build = QuantumLayer.build
    _symbol_values = QuantumLayer._symbol_values
    _describe_value = QuantumLayer._describe_value

    @property
    def num_measured(self):
        return len(self._qubit_indices)

    def _angles(self, inputs):
        return self.compiled.angles(self._symbol_values(tf.convert_to_tensor(inputs)))

    def _values(self, inputs):
        return self._symbol_values(tf.convert_to_tensor(inputs))

    def _next_seed(self):
        return self._seed_generator.next()

    @property
    def _runs_trajectories(self):
        return self._noisy is not None and self._noisy.needs_seed

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self._output_dtype())

    def _output_dtype(self):
        return self.compute_dtype

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "circuit": serialization.circuit_to_config(self.circuit),
                "input_symbols": list(self.input_symbols),
                "weight_symbols": list(self.weight_symbols),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "constraint": keras.constraints.serialize(self.constraint),
            }
        )
        if self._takes_qubits:
            config["qubits"] = None if self.qubits is None else [serialization.qubit_to_config(q)
                                                                 for q in self.qubits]
        if self._takes_noise:
            config.update(noise_config(self.noise, self.simulation, self.trajectories))
        return config

    @classmethod
    def from_config(cls, config):
        if cls._takes_noise and config.get("noise") is not None and "simulation" not in config:
            # Saved before simulation= existed, when noisy measurements always ran the density matrix.
            config = {**config, "simulation": "density_matrix"}
        return super().from_config(config)


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class ProbabilityLayer(_MeasurementLayer):
    """Probabilities of the basis states of some qubits at the end of a circuit.

    The circuit is run on the native simulator, with some of its symbols fed
    by the inputs and the others trainable weights (as in `QuantumLayer`).
    Output column `i` is the probability of measuring the basis state `i`
    of `qubits`, in Cirq's bit order: the first listed qubit is the most
    significant bit (`cirq.Simulator`'s `final_state_vector` order). Qubits
    not listed are traced out (marginal probabilities).

    Exact (`shots=None`): differentiable with respect to inputs and weights,
    by the adjoint method. With `shots=N`: the frequencies of N measurements
    per batch row (multiples of 1/N), which have no gradient: asking for one
    raises an error.

    A noisy circuit run as trajectories (`simulation="trajectories"`, or
    `"auto"` above 12 qubits) gives, with `shots=None`, the mean of
    `|psi_t|^2` over `trajectories` trajectories per batch row: each channel
    applies one of its Kraus operators K_k, picked with a probability q_k
    fixed in advance and rescaled by 1/sqrt(q_k) (as `QuantumLayer`'s
    trajectories), so the estimate and its adjoint gradient are unbiased.
    The states are not renormalized (that would bias them), so a row sums
    to 1 only on average, except for mixed-unitary noise (depolarizing,
    Pauli flips), where every trajectory is normalized. With `shots=N`,
    the frequencies of `SampleLayer`'s trajectory shots.

    Args:
      circuit: a `cirq.Circuit` with sympy symbols, or a
        `qiskit.QuantumCircuit` with `Parameter`s.
      qubits: the measured qubits, most significant first: `cirq.Qid`s for
        Cirq circuits, qubit indices for Qiskit ones (there index 0 is the
        most significant bit too: pass them reversed for Qiskit's own little-
        endian order). Default: all the circuit's qubits (Cirq: sorted;
        Qiskit: 0, 1, ...).
      input_symbols: the symbols fed by the inputs, in input-column order.
      weight_symbols: the trainable symbols. Defaults to every other symbol
        of the circuit, sorted by name.
      shots: None for exact probabilities, or the number of measurements per
        batch row.
      noise: None, or a noise model as `QuantumLayer` takes it (a
        `cirq.NoiseModel`, a per-gate table, a `qiskit_aer.noise.NoiseModel`);
        channels in the circuit count too. Readout errors apply to the
        probabilities (and to each shot).
      simulation: for a noisy circuit: `"density_matrix"` (exact: rho as a
        vector on 2n qubits), `"trajectories"` (unbiased Monte-Carlo
        estimates, see above) or `"auto"` (the default: the density matrix
        up to 12 qubits, then trajectories).
      trajectories: trajectories per batch row (default 100). The standard
        error of a probability p is at most sqrt(p (1 - p) / trajectories)
        for mixed-unitary noise; damping channels can add some.
      seed: with `shots` or trajectories: an int for a reproducible sequence
        of outputs (the same in a fresh process), or None (a different one
        every run). The seed state is a `keras.random.SeedGenerator` variable
        advanced once per call; `.keras` files and SavedModels save it, so a
        reloaded model continues the sequence where the saved one stood.
      initializer: initializer of the weights (default uniform in [0, 2 pi)).
      regularizer: optional regularizer of the weights.
      constraint: optional constraint of the weights.

    Input shape:
      `(batch, len(input_symbols))`, real values; without input symbols, any
      input (only its batch size is used).

    Output shape:
      `(batch, 2**len(qubits))`, in the layer's compute dtype.

    Example:

    >>> import cirq, sympy, keras
    >>> q = cirq.LineQubit.range(2)
    >>> x = sympy.Symbol("x")
    >>> layer = ProbabilityLayer(cirq.Circuit(cirq.rx(x)(q[0]), cirq.CNOT(*q)), input_symbols=[x])
    >>> layer(keras.ops.convert_to_tensor([[0.0]])).numpy().round(3)
    array([[1., 0., 0., 0.]], dtype=float32)
    """

    def __init__(self, circuit, qubits=None, input_symbols=(), weight_symbols=None, shots=None, seed=None,
                 **kwargs):
        layer = type(self).__name__
        self.shots = None if shots is None else _check_count(shots, "shots", layer)
        self.seed = _check_seed(seed, layer)
        super().__init__(circuit, qubits=qubits, input_symbols=input_symbols, weight_symbols=weight_symbols,
                         **kwargs)
        if self.shots is not None or self._runs_trajectories:
            self._seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def call(self, inputs):
        values = self._values(inputs)
        if self.shots is None:
            seed = self._next_seed() if self._runs_trajectories else None
            probabilities = self.compiled.probabilities(values, self._qubit_indices, dtype=values.dtype, seed=seed)
        else:
            bits = self.compiled.sample(values, self._qubit_indices, self.shots, self._next_seed(),
                                        dtype=values.dtype)
            probabilities = _without_gradient(self.name, values, frequencies(bits, values.dtype))
        return tf.cast(probabilities, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2**self.num_measured)

    def get_config(self):
        config = super().get_config()
        config.update({"shots": self.shots, "seed": self.seed})
        return config


def frequencies(bits, dtype=tf.float32):
    """Samples [B, shots, k] (bit j = qubit j, the first most significant) -> frequencies [B, 2**k]."""
    bits = tf.convert_to_tensor(bits)
    k = bits.shape[-1]
    weights = tf.constant([1 << (k - 1 - j) for j in range(k)], tf.int32)
    index = tf.reduce_sum(bits * weights, axis=-1)  # [B, shots]
    batch, shots = tf.shape(index)[0], tf.shape(index)[1]
    index += tf.range(batch)[:, None] * (2**k)
    counts = tf.math.bincount(tf.reshape(index, [-1]), minlength=batch * 2**k, maxlength=batch * 2**k,
                              dtype=dtype)
    return tf.reshape(counts, [batch, 2**k]) / tf.cast(shots, dtype)


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class SampleLayer(_MeasurementLayer):
    """Bitstrings measured at the end of a circuit: `shots` per batch row.

    Each row of the inputs (with the weights) sets the circuit's symbols; the
    native simulator runs it and draws `shots` measurements of `qubits` in the
    computational basis from the final state. Bit `j` of a sample is
    `qubits[j]` (Cirq's order, as `cirq.Simulator.run` and TFQ's `Sample`
    layer). Samples are integers, which TensorFlow never differentiates
    (like `tf.random.categorical`): a gradient through them is None, and
    `fit` says no gradients were provided. Use `ProbabilityLayer` (exact) or
    `QuantumLayer(..., shots=...)` to train.

    Args:
      circuit: a `cirq.Circuit` with sympy symbols, or a
        `qiskit.QuantumCircuit` with `Parameter`s.
      shots: the number of measurements per batch row.
      qubits: the measured qubits: `cirq.Qid`s for Cirq circuits, indices for
        Qiskit ones. Default: all the circuit's qubits (Cirq: sorted).
      input_symbols: the symbols fed by the inputs, in input-column order.
      weight_symbols: the other symbols (weights; default all other symbols).
      seed: an int for a reproducible sequence of outputs (the same in a
        fresh process), or None (a different one every run). The seed state
        is a `keras.random.SeedGenerator` variable advanced once per call;
        `.keras` files and SavedModels save it, so a reloaded model continues
        the sequence where the saved one stood.
      noise: as `ProbabilityLayer`'s: samples drawn from the density matrix
        or from trajectories, each bit flipped by the readout errors.
      simulation: for a noisy circuit: `"density_matrix"` (independent
        shots from the exact rho), `"trajectories"` or `"auto"` (the
        default: the density matrix up to 12 qubits, then trajectories).
        Trajectories are quantum-jump (Monte-Carlo wave function) ones: each
        channel applies K_k with probability ||K_k psi||^2 and renormalizes,
        so a trajectory is a pure state drawn such that their mixture is rho,
        and a shot of a random trajectory is exactly a draw from rho. Each
        batch row runs min(shots, trajectories) of them and takes
        ceil(shots / that) shots from each (shot s from trajectory s mod T):
        every shot, and so every frequency, is unbiased; with shots <=
        trajectories the shots are independent, as from the density matrix,
        otherwise shots of one trajectory are correlated and frequencies
        spread a little more.
      trajectories: the most trajectories per batch row (default 100).
      initializer, regularizer, constraint: of the weights.

    Input shape:
      `(batch, len(input_symbols))`, real values; without input symbols, any
      input (only its batch size is used).

    Output shape:
      `(batch, shots, len(qubits))`, int32 zeros and ones.

    Example:

    >>> import cirq, keras
    >>> q = cirq.LineQubit.range(2)
    >>> layer = SampleLayer(cirq.Circuit(cirq.I(q[0]), cirq.X(q[1])), shots=3, seed=0)
    >>> layer(keras.ops.zeros((1, 0))).numpy().tolist()
    [[[0, 1], [0, 1], [0, 1]]]
    """

    def __init__(self, circuit, shots, qubits=None, input_symbols=(), weight_symbols=None, seed=None, **kwargs):
        layer = type(self).__name__
        self.shots = _check_count(shots, "shots", layer)
        self.seed = _check_seed(seed, layer)
        super().__init__(circuit, qubits=qubits, input_symbols=input_symbols, weight_symbols=weight_symbols,
                         **kwargs)
        self._seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def call(self, inputs):
        values = self._values(inputs)
        return self.compiled.sample(values, self._qubit_indices, self.shots, self._next_seed(), dtype=values.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.shots, self.num_measured)

    def _output_dtype(self):
        return "int32"

    def get_config(self):
        config = super().get_config()
        config.update({"shots": self.shots, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class StateLayer(_MeasurementLayer):
    """The state vector at the end of a parameterized circuit.

    Amplitudes in Cirq's order (`cirq.Simulator().simulate(...).final_state_vector`):
    the first register qubit (Cirq: the sorted circuit qubits; Qiskit: qubit
    0) is the most significant bit of the index, the reverse of Qiskit's
    `Statevector`. Differentiable for real-valued losses of the state (a
    fidelity `|<target|psi>|**2`, say) with respect to inputs and weights, by
    the adjoint method, so state learning and quantum autoencoders train
    with `fit`. Keras losses cast `y_true` and `y_pred` to their `dtype`
    (float32 by default, which drops imaginary parts): give a loss on states
    `dtype="complex64"` (a `keras.losses.Loss` subclass whose `call` returns
    a real value, e.g. `1 - |<y_true|y_pred>|**2`).

    Args:
      circuit: a `cirq.Circuit` with sympy symbols, or a
        `qiskit.QuantumCircuit` with `Parameter`s.
      input_symbols: the symbols fed by the inputs, in input-column order.
      weight_symbols: the trainable symbols (default all other symbols).
      initializer, regularizer, constraint: of the weights.

    Input shape:
      `(batch, len(input_symbols))`, real values; without input symbols, any
      input (only its batch size is used).

    Output shape:
      `(batch, 2**num_qubits)`, complex64 (complex128 for a float64 layer).

    Example:

    >>> import cirq, keras
    >>> q = cirq.LineQubit.range(2)
    >>> StateLayer(cirq.Circuit(cirq.X(q[0]), cirq.I(q[1])))(keras.ops.zeros((1, 0))).numpy()
    array([[0.+0.j, 0.+0.j, 1.+0.j, 0.+0.j]], dtype=complex64)
    """

    _takes_qubits = False
    _takes_noise = False

    def __init__(self, circuit, input_symbols=(), weight_symbols=None, **kwargs):
        super().__init__(circuit, input_symbols=input_symbols, weight_symbols=weight_symbols, **kwargs)

    def call(self, inputs):
        state = _measure_ops().state(self.compiled.program_inputs, self._angles(inputs))
        state = tf.complex(state[:, 0], state[:, 1])
        return cirq_to_native_order(state, self.num_qubits)  # the map is its own inverse

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2**self.num_qubits)

    def _output_dtype(self):
        return "complex128" if _checks.internal_dtype(self.compute_dtype) == "float64" else "complex64"
