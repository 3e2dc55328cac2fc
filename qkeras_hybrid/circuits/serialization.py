"""Circuits and observables to and from JSON-safe values for Keras configs.

Cirq circuits are stored as Cirq JSON; Qiskit circuits as base64 QPY and
SparsePauliOp observables as (label, re, im) lists.
"""

import base64
import io

import cirq

from qkeras_hybrid.circuits.compiled import is_qiskit_circuit


def circuit_to_config(circuit):
    if is_qiskit_circuit(circuit):
        from qiskit import qpy

        buf = io.BytesIO()
        qpy.dump(circuit, buf)
        return {"format": "qpy", "data": base64.b64encode(buf.getvalue()).decode("ascii")}
    try:
        return {"format": "cirq_json", "data": cirq.to_json(circuit)}
    except TypeError as e:
        raise ValueError(
            f"This circuit cannot be saved as Cirq JSON ({e}). Cirq JSON stores sympy "
            "symbols, sums, products and powers but not functions such as sin; move "
            "such a function into the model (e.g. a layer before this one)."
        ) from e


def circuit_from_config(config):
    if isinstance(config, dict) and config.get("format") == "qpy":
        from qiskit import qpy

        return qpy.load(io.BytesIO(base64.b64decode(config["data"])))[0]
    if isinstance(config, dict) and config.get("format") == "cirq_json":
        return cirq.read_json(json_text=config["data"])
    return config  # already a circuit


def observables_to_config(observables):
    out = []
    for o in observables:
        if hasattr(o, "to_list") and hasattr(o, "num_qubits"):  # SparsePauliOp
            out.append(
                {"format": "sparse_pauli_op", "terms": [[l, c.real, c.imag] for l, c in o.to_list()]}
            )
        else:
            out.append({"format": "cirq_json", "data": cirq.to_json(cirq.PauliSum.wrap(o))})
    return out


def observables_from_config(config):
    out = []
    for o in config:
        if isinstance(o, dict) and o.get("format") == "sparse_pauli_op":
            from qiskit.quantum_info import SparsePauliOp

            out.append(SparsePauliOp.from_list([(l, complex(re, im)) for l, re, im in o["terms"]]))
        elif isinstance(o, dict) and o.get("format") == "cirq_json":
            out.append(cirq.read_json(json_text=o["data"]))
        else:
            out.append(o)
    return out


def qubit_to_config(qubit):
    return cirq.to_json(qubit)


def qubit_from_config(config):
    return cirq.read_json(json_text=config) if isinstance(config, str) else config
