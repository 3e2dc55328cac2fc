"""Circuits and observables to and from JSON-safe values for Keras configs.

Cirq circuits are stored as Cirq JSON; Qiskit circuits as base64 QPY and
SparsePauliOp observables as (label, re, im) lists.
"""

import base64
import io

import cirq
import sympy
from cirq.protocols.json_serialization import CirqEncoder

from qkeras_hybrid.circuits.compiled import is_qiskit_circuit


def circuit_to_config(circuit):
    if is_qiskit_circuit(circuit):
        from qiskit import qpy

        buf = io.BytesIO()
        qpy.dump(circuit, buf)
        return {"format": "qpy", "data": base64.b64encode(buf.getvalue()).decode("ascii")}
    try:
        return {"format": "cirq_json", "data": cirq.to_json(circuit, cls=_Encoder)}
    except TypeError as e:
        raise ValueError(f"This circuit cannot be saved as Cirq JSON: {e}") from e


def circuit_from_config(config):
    if isinstance(config, dict) and config.get("format") == "qpy":
        from qiskit import qpy

        return qpy.load(io.BytesIO(base64.b64decode(config["data"])))[0]
    if isinstance(config, dict) and config.get("format") == "cirq_json":
        return cirq.read_json(json_text=config["data"], resolvers=[_resolve] + cirq.DEFAULT_RESOLVERS)
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


# Cirq JSON stores sympy symbols, sums, products and powers but no functions
# (sin, atan2, ...). Those are stored as an expression tree of whitelisted
# sympy names, rebuilt without eval, so a saved file cannot run code.
_SYMPY_FUNCTIONS = {
    name: getattr(sympy, name)
    for name in (
        "Add", "Mul", "Pow", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh",
        "tanh", "exp", "log", "Abs", "sign", "Min", "Max",
    )
}
_SYMPY_CONSTANTS = {"pi": sympy.pi, "E": sympy.E}
_EXPRESSION_TYPE = "qkeras_hybrid.SympyExpression"


def expression_to_tree(expr):
    if isinstance(expr, sympy.Symbol):
        return {"symbol": expr.name}
    if isinstance(expr, sympy.Integer):
        return {"integer": int(expr)}
    if isinstance(expr, sympy.Rational):
        return {"rational": [int(expr.p), int(expr.q)]}
    if isinstance(expr, sympy.Float):
        return {"float": float(expr)}
    for name, const in _SYMPY_CONSTANTS.items():
        if expr == const:
            return {"constant": name}
    name = type(expr).__name__
    if name not in _SYMPY_FUNCTIONS:
        raise TypeError(f"sympy {name} in {expr} is not one of the storable functions {sorted(_SYMPY_FUNCTIONS)}")
    return {"function": name, "args": [expression_to_tree(a) for a in expr.args]}


def expression_from_tree(tree):
    if "symbol" in tree:
        return sympy.Symbol(tree["symbol"])
    if "integer" in tree:
        return sympy.Integer(tree["integer"])
    if "rational" in tree:
        return sympy.Rational(*tree["rational"])
    if "float" in tree:
        return sympy.Float(tree["float"])
    if "constant" in tree:
        return _SYMPY_CONSTANTS[tree["constant"]]
    name = tree["function"]
    if name not in _SYMPY_FUNCTIONS:
        raise ValueError(f"Unknown sympy function {name!r} in a saved circuit")
    return _SYMPY_FUNCTIONS[name](*[expression_from_tree(a) for a in tree["args"]])


class _Encoder(CirqEncoder):
    def default(self, o):
        if isinstance(o, sympy.Basic) and not isinstance(o, (sympy.Symbol, sympy.Number)):
            try:
                return super().default(o)
            except TypeError:
                return {"cirq_type": _EXPRESSION_TYPE, "tree": expression_to_tree(o)}
        return super().default(o)


class _StoredExpression:
    @staticmethod
    def _from_json_dict_(tree, **kwargs):
        return expression_from_tree(tree)


def _resolve(cirq_type):
    return _StoredExpression if cirq_type == _EXPRESSION_TYPE else None
