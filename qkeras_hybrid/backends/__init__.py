"""Executors: the same circuit on different simulators, behind one interface.

`executor.expectation(symbol_values [B, S], dtype, programs=None) -> [B, O]`,
differentiable; `programs` are optional quantum data (a batch of TFQ circuit
strings) run before the circuit. `make_executor` picks one for `QuantumLayer`
and `QuantumDataLayer`'s `backend=` ("native", "tfq"). `qiskit_executor` runs
`QiskitLayer`'s circuits on Qiskit primitives (its own interface).
"""

from qkeras_hybrid.backends.native import NativeExecutor
from qkeras_hybrid.backends.tfq import TFQExecutor, TFQNotAvailableError, load_saved_model, register_tfq_ops

BACKENDS = ("native", "tfq")

# Register TFQ's ops (when it is installed) so that SavedModels exported from
# tfq-backend layers load after `import qkeras_hybrid`, like ours do.
TFQ_OPS_UNAVAILABLE = register_tfq_ops()


def make_executor(backend, circuit, observables, symbols, qubits=None, differentiator=None, repetitions=None,
                  compiled=None):
    """The executor of `backend` for this circuit, built once."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "native":
        if differentiator is not None:
            raise ValueError("The native backend computes adjoint gradients itself; differentiator must be None "
                             "(differentiators are for backend='tfq')")
        if repetitions is not None:
            raise ValueError("The native backend computes exact expectations; repetitions must be None "
                             "(sampled expectations need backend='tfq')")
        return NativeExecutor(circuit, observables, symbols, qubits, compiled=compiled)
    return TFQExecutor(circuit, observables, symbols, qubits, differentiator=differentiator,
                       repetitions=repetitions)


__all__ = ["BACKENDS", "NativeExecutor", "TFQExecutor", "TFQNotAvailableError", "load_saved_model",
           "make_executor", "register_tfq_ops"]
