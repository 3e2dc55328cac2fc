"""The native executor: our C++ simulator op through a `CompiledCircuit`."""

import numpy as np
import tensorflow as tf

from qkeras_hybrid.backends._validation import check_num_qubits
from qkeras_hybrid.circuits.compiled import CompiledCircuit


class NativeExecutor:
    """Expectations of one circuit on the native op (adjoint gradients).

    Args: as `CompiledCircuit` (circuit, observables, symbols, qubits).
    """

    name = "native"

    def __init__(self, circuit, observables, symbols, qubits=None, compiled=None):
        self.compiled = compiled or CompiledCircuit(circuit, observables, symbols=symbols, qubits=qubits)
        check_num_qubits(self.compiled.num_qubits, "native", "backend='native'")
        self.num_observables = self.compiled.num_observables
        self._state_order = None

    def expectation(self, symbol_values, dtype=tf.float32, programs=None):
        """<O_o> per row of symbol values [B, S] -> [B, O]; differentiable.

        `programs`: optional [B] TFQ circuit strings (quantum data). The native
        op runs one program for the whole batch, so each data circuit enters
        as its initial state, computed by TFQ's state op.
        """
        if programs is None:
            return self.compiled.expectation(symbol_values, dtype=dtype)
        states = self.data_states(programs)
        initial = tf.stack([tf.math.real(states), tf.math.imag(states)], axis=1)
        return self.compiled.expectation_from_state(tf.cast(initial, dtype), symbol_values, dtype=dtype)

    def data_states(self, programs):
        """Final states [B, 2**n] (complex64) of the data circuits, in our amplitude order."""
        from qkeras_hybrid.backends.tfq import register_qubits_program, require_tfq

        tfq = require_tfq("Circuit inputs (quantum data)")
        from tensorflow_quantum.core.ops import tfq_simulate_ops
        qubits = self.compiled.qubits
        n = len(qubits)
        if self._state_order is None:
            with tf.init_scope():
                self._register = tfq.convert_to_tensor([register_qubits_program(qubits)])
            # TFQ: sorted qubits, the first one most significant. Ours: register
            # qubit q is bit q. Axis j of our [2]*n reshape is register qubit n-1-j.
            rank = {q: i for i, q in enumerate(sorted(qubits))}
            self._state_order = [1 + rank[qubits[n - 1 - j]] for j in range(n)]
        programs = tf.convert_to_tensor(programs, tf.string)
        batch = tf.shape(programs)[0]
        # Identities on the whole register first, so every data circuit spans it.
        programs = tfq.append_circuit(tf.tile(self._register, [batch]), programs)
        # The raw op: padded [B, 2**max_n] (tfq.get_state_op() makes it ragged).
        states = tfq_simulate_ops.tfq_simulate_state(programs, tf.constant([], tf.string), tf.zeros([batch, 0]))
        dim = 2**n
        check = tf.debugging.assert_equal(
            tf.shape(states)[1], dim,
            message=f"Data circuits must act only on the layer's qubits {qubits}; some act on other qubits",
        )
        with tf.control_dependencies([check]):
            states = tf.reshape(states, tf.concat([[batch], np.full(n, 2, np.int32)], axis=0))
        states = tf.transpose(states, [0] + self._state_order)
        return tf.reshape(states, [batch, dim])
