"""QuantumDataLayer: a model circuit appended to a batch of input circuits."""

import cirq
import keras
import numpy as np
import tensorflow as tf

from qkeras_hybrid.backends._validation import check_num_qubits
from qkeras_hybrid.backends.tfq import require_tfq
from qkeras_hybrid.layers.quantum_layer import QuantumLayer


def _is_circuit_batch(value):
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = list(value.ravel())
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(c, cirq.Circuit) for c in value)


def circuits_to_tensor(circuits):
    """A batch of `cirq.Circuit`s (list or object array) -> TFQ's [B] string tensor."""
    circuits = list(np.asarray(circuits, dtype=object).ravel()) if isinstance(circuits, np.ndarray) else list(circuits)
    with_symbols = [i for i, c in enumerate(circuits) if cirq.is_parameterized(c)]
    if with_symbols:
        raise ValueError(f"Data circuits must not contain symbols; circuits {with_symbols[:5]} do "
                         f"(e.g. {sorted(map(str, cirq.parameter_symbols(circuits[with_symbols[0]])))})")
    return require_tfq("Circuit inputs (quantum data)").convert_to_tensor(circuits)


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class QuantumDataLayer(QuantumLayer):
    """Expectation values of a model circuit run after each input circuit.

    The layer's input is quantum data: a batch of circuits, one per sample
    (TFQ's `tfq.convert_to_tensor` string tensors, or a list of
    `cirq.Circuit`s, converted once). The trainable model circuit is appended
    to each, like `tfq.layers.PQC` does; with `input_symbols` some of its
    symbols are fed by a second input, like `tfq.layers.ControlledPQC`
    (`layer([circuits, values])`), and with every symbol an input and no
    weights it is `tfq.layers.Expectation`. Data circuits must not contain
    symbols, and must act only on the layer's qubits (native backend).

    On the native backend each data circuit enters as the initial state of
    the model circuit (computed by TFQ's state op, so the graph stays in TF
    ops and exports); on `backend="tfq"` the circuits are appended with
    `tfq.append_circuit` and run by TFQ's expectation op. Either way TFQ
    must be installed: its circuit strings are the input format.

    Args:
      circuit: the model `cirq.Circuit`, with sympy symbols.
      observables: one or a list of `cirq.PauliSum` / `cirq.PauliString`.
      input_symbols: symbols fed by the second input, in column order
        (TFQ's ControlledPQC "controls"). Default: none, input = circuits.
      weight_symbols: the trainable symbols (default: every other symbol,
        sorted by name).
      backend: `"native"` or `"tfq"`, as in `QuantumLayer`.
      differentiator, repetitions: `"tfq"` only, as in `QuantumLayer`.
      initializer, regularizer, constraint: of the weights.
      qubits: the register order (default: the model circuit's qubits,
        sorted). Include any qubit the data circuits use that the model
        circuit does not.

    Input shape:
      `(batch,)` tf.string circuits, or `[(batch,), (batch, len(input_symbols))]`.

    Output shape:
      `(batch, len(observables))`.

    Example:

    >>> import cirq, sympy
    >>> q = cirq.LineQubit(0)
    >>> layer = QuantumDataLayer(cirq.Circuit(cirq.ry(sympy.Symbol("w"))(q)), cirq.Z(q))
    >>> data = [cirq.Circuit(cirq.X(q)), cirq.Circuit(cirq.H(q))]
    >>> layer(data).shape
    TensorShape([2, 1])
    """

    def __init__(self, circuit, observables, input_symbols=(), weight_symbols=None, **kwargs):
        from qkeras_hybrid.circuits import serialization

        circuit = serialization.circuit_from_config(circuit)
        if not isinstance(circuit, cirq.Circuit):
            raise TypeError(f"QuantumDataLayer's model circuit must be a cirq.Circuit (data circuits are Cirq "
                            f"circuits), got {type(circuit).__name__}")
        super().__init__(circuit, observables, input_symbols=input_symbols, weight_symbols=weight_symbols, **kwargs)

    def __call__(self, inputs, *args, **kwargs):
        # Python circuits become TFQ's string tensor before Keras sees them.
        if _is_circuit_batch(inputs):
            inputs = self._circuits_to_tensor(inputs)
        elif isinstance(inputs, (list, tuple)) and len(inputs) == 2 and _is_circuit_batch(inputs[0]):
            inputs = [self._circuits_to_tensor(inputs[0]), inputs[1]]
        return super().__call__(inputs, *args, **kwargs)

    def _circuits_to_tensor(self, circuits):
        """TFQ's string tensor of Python circuits, whose qubits are checked before TFQ simulates them."""
        circuits = list(np.asarray(circuits, dtype=object).ravel()) if isinstance(circuits, np.ndarray) \
            else list(circuits)
        qubits = set().union(*(c.all_qubits() for c in circuits))
        register = set(self.executor.qubits if self.backend == "tfq" else self.compiled.qubits)
        if self.backend == "native":
            stray = sorted(qubits - register, key=str)
            if stray:
                raise ValueError(f"{self.name}: data circuits act on qubits {stray[:8]} outside the layer's qubits "
                                 f"{sorted(register, key=str)}; pass qubits=[...] to include them")
        # TFQ simulates the data circuit's qubits and the layer's together, unchecked.
        check_num_qubits(len(qubits | register), self.backend, self.name)
        return circuits_to_tensor(circuits)

    def _split(self, inputs):
        """(circuits, values-or-None) of inputs or of input shapes, checking the structure."""
        # A shape (batch,) is a tuple too; a list of inputs holds shapes or tensors.
        several = isinstance(inputs, (list, tuple)) and not all(isinstance(e, (int, type(None))) for e in inputs)
        if self.input_symbols:
            if not (several and len(inputs) == 2):
                raise ValueError(f"{self.name} has input_symbols {self.input_symbols}, so it takes "
                                 "[circuits, values]; got a single input")
            return inputs[0], inputs[1]
        if several:
            if len(inputs) != 1:
                raise ValueError(f"{self.name} has no input_symbols, so it takes only a batch of circuits; "
                                 f"got {len(inputs)} inputs")
            inputs = inputs[0]
        return inputs, None

    def build(self, input_shape):
        circuits_shape, values_shape = self._split(input_shape)
        if len(circuits_shape) != 1:
            raise ValueError(f"{self.name} expects a batch of circuits of shape (batch,), got {tuple(circuits_shape)}")
        super().build(values_shape if self.input_symbols else (circuits_shape[0], 0))

    def call(self, inputs):
        circuits, values = self._split(inputs)
        circuits = tf.convert_to_tensor(circuits)
        if circuits.dtype != tf.string:
            raise TypeError(f"{self.name} takes circuits as a tf.string tensor (tfq.convert_to_tensor) or a list "
                            f"of cirq.Circuit, got dtype {circuits.dtype.name}")
        if circuits.shape.rank not in (None, 1):
            raise ValueError(f"{self.name} expects a batch of circuits of shape (batch,), got {tuple(circuits.shape)}")
        if values is not None:
            values = tf.convert_to_tensor(values)
            if values.shape.rank == 2 and None not in (values.shape[0], circuits.shape[0]) \
                    and values.shape[0] != circuits.shape[0]:
                raise ValueError(f"{self.name} got {circuits.shape[0]} circuits but {values.shape[0]} rows of values")
        return self._expectation(self._symbol_values(values, tf.shape(circuits)[0]), programs=circuits)

    def compute_output_shape(self, input_shape):
        circuits_shape, _ = self._split(input_shape)
        return (circuits_shape[0], self.num_observables)
