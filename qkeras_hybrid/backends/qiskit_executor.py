"""Runs a Qiskit circuit (or a black box) for batches of parameter values.

One job per call: the forward pass of a batch is one job whose PUB holds a
[B, G] parameter array, and the gradient one job over all [2 G B, G] shifted
parameter sets (G parametric gate occurrences; shot-based expectation values
add one PUB per measurement basis to the same job). Never a job per sample.

Gradients. The circuit is translated once to a basis whose only parametric
gates are Pauli rotations (rx, ry, rz, rxx, ryy, rzz, rzx), for which the
parameter-shift rule is exact; each parametric gate occurrence gets its own
parameter g_j = e_j(theta) (`e_j` the angle expression in the user's
parameters), the rule differentiates the g_j and the chain rule with
de_j/dtheta (sympy, vectorized over the batch) gives the user's gradient. So
`2*theta`, a parameter used by several gates, `u`, `cp`, `cry` are all exact,
as qiskit-algorithms' gradients do it.

Primitives. Qiskit 2's V2 primitives only. With observables and
`shots=None`: Aer's EstimatorV2 (exact expectation values). With `shots=N`
and no estimator given: each qubit-wise commuting group of Pauli terms is
measured in its basis with N shots by a sampler (Aer's SamplerV2, which binds
parameters inside Aer, or `BackendSamplerV2` for other backends), all groups
in one job: real sampling, not the Gaussian noise Aer's EstimatorV2 adds for a
`precision`. Without observables the circuit's own measurements are sampled
and the value is the mean integer value of the measured bitstring (the Qiskit
textbook's sum of state x probability).
"""

import math

import numpy as np
import sympy

from qkeras_hybrid.circuits.qiskit_compiler import parameter_expr
from qkeras_hybrid.differentiators import ParameterShift

# Gates whose single parameter enters as exp(-i g P / 2), P a Pauli string.
ROTATION_GATES = ("rx", "ry", "rz", "rxx", "ryy", "rzz", "rzx")
FIXED_GATES = (
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg",
    "cx", "cy", "cz", "swap", "ccx", "measure",
)


MEASURE_REGISTER = "qkh_basis_meas"
# Our default simulator runs single-threaded: Aer's OpenMP threads fight
# TensorFlow's thread pool inside a train step (5x slower steps measured on 2
# cores), and small circuits gain nothing from them.
DEFAULT_AER_OPTIONS = {"max_parallel_threads": 1}


class BackendJobError(RuntimeError):
    """A Qiskit job (or a black box's `run`) failed; the message names the cause."""


class QiskitCircuitError(ValueError):
    """The circuit cannot be run or differentiated as asked."""


# ------------------------------------------------------------------ circuits


def has_measurements(circuit):
    return any(inst.operation.name == "measure" for inst in circuit.data)


def final_measurements(circuit):
    """{clbit index: qubit index} of the measurements, which must end the circuit.

    Raises QiskitCircuitError for a mid-circuit measurement, a clbit
    measured twice or classically controlled operations.
    """
    measured = {}
    done_qubits, done_clbits = set(), set()
    for inst in circuit.data:
        name = inst.operation.name
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        clbits = [circuit.find_bit(c).index for c in inst.clbits]
        if name == "barrier":
            continue
        if name == "measure":
            (qubit,), (clbit,) = qubits, clbits
            if clbit in measured or qubit in done_qubits:
                raise QiskitCircuitError(
                    f"Qubit {qubit} or clbit {clbit} is measured twice; only final measurements are supported here"
                )
            measured[clbit] = qubit
            done_qubits.add(qubit)
            done_clbits.add(clbit)
            continue
        touched = sorted(set(qubits) & done_qubits) + sorted(set(clbits) & done_clbits)
        if touched or clbits:
            raise QiskitCircuitError(
                f"Instruction {name!r} acts after a measurement or on classical bits; "
                "only circuits whose measurements come last are supported here"
            )
    return measured


def bitstring_value_observable(circuit):
    """The diagonal SparsePauliOp whose expectation is the mean integer value of the measured bits.

    value = sum_k 2^k b_k and b_k = (1 - Z_q) / 2 for clbit k measured from qubit q.
    """
    from qiskit.quantum_info import SparsePauliOp

    measured = final_measurements(circuit)
    terms = [("", [], sum(2.0 ** (k - 1) for k in measured))]
    terms += [("Z", [q], -(2.0 ** (k - 1))) for k, q in measured.items()]
    return SparsePauliOp.from_sparse_list(terms, num_qubits=circuit.num_qubits).simplify()


def _without_measurements(circuit):
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name != "measure":
            out.append(inst)
    return out


def rotation_form(circuit):
    """The circuit in Pauli-rotation form with one fresh parameter per parametric gate.

    Returns (gate_circuit, gate_params, angle_exprs): `angle_exprs[j]` is
    the sympy expression (in the user's parameter names) that gate
    parameter `gate_params[j]` stands for.
    """
    from qiskit import transpile
    from qiskit.circuit import ParameterVector

    try:
        translated = transpile(circuit, basis_gates=list(ROTATION_GATES + FIXED_GATES), optimization_level=0)
    except Exception as e:
        raise QiskitCircuitError(f"The circuit cannot be translated to Pauli rotations for the parameter shift: {e}") from e
    parametric = [inst for inst in translated.data if _is_parametric(inst.operation)]
    gate_params = ParameterVector("_qkh_g", len(parametric))
    out = translated.copy_empty_like()
    out.global_phase = 0.0  # a (parametric) global phase changes no expectation value
    exprs = []
    for inst in translated.data:
        op = inst.operation
        if _is_parametric(op):
            if op.name not in ROTATION_GATES or len(op.params) != 1:
                raise QiskitCircuitError(
                    f"Gate {op.name!r} with parameters {op.params} has no exact parameter-shift rule "
                    "(it did not translate to rx/ry/rz/rxx/ryy/rzz/rzx)"
                )
            exprs.append(parameter_expr(op.params[0]))
            op = op.to_mutable()
            op.params = [gate_params[len(exprs) - 1]]
        out.append(op, inst.qubits, inst.clbits)
    return out, list(gate_params), exprs


def _measurement_circuits(circuit, observables):
    """Circuits measuring each qubit-wise commuting group of the observables' Pauli terms.

    Returns (circuits, groups): groups[i] lists (output, coefficient, qubits
    whose Z parities make the term) for circuit i; constant terms sit in group 0.
    """
    from qiskit import ClassicalRegister
    from qiskit.quantum_info import SparsePauliOp

    terms = {}
    for output, observable in enumerate(observables):
        for pauli, coeff in zip(observable.paulis, observable.coeffs):
            if abs(coeff.imag) > 1e-12:
                raise ValueError(f"Observable {output} has a complex coefficient {coeff}; it must be Hermitian")
            terms.setdefault(pauli.to_label(), []).append((output, float(coeff.real)))
    identity = "I" * circuit.num_qubits
    groups_ops = SparsePauliOp([l for l in terms if l != identity] or [identity]).group_commuting(qubit_wise=True)
    circuits, groups = [], []
    for group in groups_ops:
        basis = {}
        for pauli in group.paulis:
            for q in range(circuit.num_qubits):
                if pauli.x[q] or pauli.z[q]:
                    basis[q] = "Y" if (pauli.x[q] and pauli.z[q]) else ("X" if pauli.x[q] else "Z")
        measured = _without_measurements(circuit)
        for q, axis in sorted(basis.items()):
            if axis == "Y":
                measured.sdg(q)
            if axis in "XY":
                measured.h(q)
        register = ClassicalRegister(circuit.num_qubits, MEASURE_REGISTER)
        measured.add_register(register)
        measured.measure(range(circuit.num_qubits), register)
        entries = []
        for pauli in group.paulis:
            label = pauli.to_label()
            if label == identity:
                continue
            support = [q for q in range(circuit.num_qubits) if pauli.x[q] or pauli.z[q]]
            entries += [(output, coeff, support) for output, coeff in terms.get(label, [])]
        circuits.append(measured)
        groups.append(entries)
    groups[0] += [(output, coeff, []) for output, coeff in terms.get(identity, [])]
    return circuits, groups


def _bits(pub_result, rows, register=None):
    """A sampler PUB result as booleans [rows, shots, clbits], clbit k at index k."""
    data = pub_result.join_data() if register is None else getattr(pub_result.data, register)
    bits = data.to_bool_array(order="little")
    return bits.reshape(rows, -1, bits.shape[-1])


def _is_parametric(op):
    return any(getattr(p, "parameters", None) for p in op.params)


class _AngleFunctions:
    """Vectorized e_j(theta) and de_j/dtheta_k from sympy expressions."""

    def __init__(self, exprs, names):
        symbols = [sympy.Symbol(n) for n in names]
        self.num_params = len(names)
        self._angles = [sympy.lambdify(symbols, e, "numpy", dummify=True) for e in exprs]
        self._derivatives = [
            [(k, sympy.lambdify(symbols, d, "numpy", dummify=True)) for k, s in enumerate(symbols)
             if (d := sympy.diff(e, s)) != 0]
            for e in exprs
        ]

    def angles(self, values):
        cols = list(values.T)
        out = np.empty((values.shape[0], len(self._angles)))
        for j, f in enumerate(self._angles):
            out[:, j] = np.broadcast_to(np.asarray(f(*cols), dtype=np.float64), values.shape[:1])
        return out

    def jacobian(self, values):
        cols = list(values.T)
        out = np.zeros((values.shape[0], len(self._angles), self.num_params))
        for j, derivatives in enumerate(self._derivatives):
            for k, f in derivatives:
                out[:, j, k] = np.broadcast_to(np.asarray(f(*cols), dtype=np.float64), values.shape[:1])
        return out


# ---------------------------------------------------------------- executors


class _Executor:
    """Common interface: `run(values [N, P]) -> [N, O]` and `vjp(values, upstream, differentiator)`."""

    num_params = 0
    num_outputs = 0

    def _check_values(self, values):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.num_params:
            raise ValueError(f"Expected parameter values of shape [batch, {self.num_params}], got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("Parameter values must be finite (got NaN or inf)")
        return values

    def vjp(self, values, upstream, differentiator):
        """d(sum(upstream * run(values)))/d values, by central shifts of the values themselves."""
        values = self._check_values(values)
        if values.shape[0] == 0 or self.num_params == 0:
            return np.zeros(values.shape)
        return differentiator.vjp(self.run(differentiator.shifted_values(values)), upstream)


class BlackBoxExecutor(_Executor):
    """A VQNet-style black box: any object with `run(values [N, P]) -> [N, O]` (or [N]).

    Its gradient shifts the values themselves: the parameter-shift rule is
    exact only if each value enters like the angle of one Pauli rotation.
    """

    def __init__(self, box, num_params, num_outputs=None):
        if not callable(getattr(box, "run", None)):
            raise TypeError(f"A black box must have a run(values) method; got {type(box).__name__}")
        self.box = box
        self.num_params = int(num_params)
        self.num_outputs = num_outputs

    def run(self, values):
        values = self._check_values(values)
        try:
            out = self.box.run(values.copy())
        except Exception as e:
            raise BackendJobError(f"The black box {type(self.box).__name__}.run failed: {type(e).__name__}: {e}") from e
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2 or out.shape[0] != values.shape[0]:
            raise BackendJobError(
                f"The black box {type(self.box).__name__}.run returned shape {out.shape} for {values.shape[0]} "
                "parameter sets; expected [sets] or [sets, outputs]"
            )
        if self.num_outputs is not None and out.shape[1] != self.num_outputs:
            raise BackendJobError(
                f"The black box {type(self.box).__name__}.run returned {out.shape[1]} outputs, expected {self.num_outputs}"
            )
        return out


class QiskitExecutor(_Executor):
    """A parameterized `QuantumCircuit` on a Qiskit backend or V2 primitive.

    Args:
      circuit: the `QuantumCircuit`.
      observables: a list of `SparsePauliOp`, or None for a circuit with
        measurements (the output is the mean integer value of the bitstring).
      parameters: the circuit's `Parameter`s in the order of the value columns.
      backend: a `BackendV2` (default `AerSimulator`). The circuit is
        transpiled for it once (observables follow the layout).
      estimator / sampler: a V2 primitive to run on instead.
      shots: None for exact expectation values (Aer's estimator; needs
        observables or final measurements), or the number of shots.
      seed: seeds the simulator; each job draws its own seed from it, so a run
        is reproducible and successive jobs are independent.
    """

    def __init__(self, circuit, observables, parameters, backend=None, estimator=None, sampler=None, shots=None,
                 seed=None):
        if shots is not None and (isinstance(shots, bool) or int(shots) != shots or shots < 1):
            raise ValueError(f"shots must be None (exact) or a positive integer, got {shots!r}")
        self.shots = None if shots is None else int(shots)
        self.parameters = list(parameters)
        self.num_params = len(self.parameters)
        self.backend = backend
        self._rng = np.random.default_rng(seed) if seed is not None else None
        measuring = not observables
        if measuring and not has_measurements(circuit):
            raise QiskitCircuitError("Give observables, or a circuit with measurements (read as bitstring values)")
        if measuring and (self.shots is None and sampler is None):
            # Exact: the bitstring value is the expectation of a diagonal observable.
            observables = [bitstring_value_observable(circuit)]
            measuring = False
        if measuring and self.shots is None:
            raise ValueError("A sampler needs shots: pass shots=N")
        if not measuring:
            if observables and any(o.num_qubits != circuit.num_qubits for o in observables):
                raise ValueError(
                    f"Observables act on {[o.num_qubits for o in observables]} qubits, the circuit has {circuit.num_qubits}"
                )
            circuit = _without_measurements(circuit)
        self.observables = list(observables or [])
        self.num_outputs = 1 if measuring else len(self.observables)
        if measuring:
            self.kind = "sampler"
        elif estimator is not None or self.shots is None:
            self.kind = "estimator"
        else:  # shots, observables, no estimator: measure each commuting group with a sampler
            self.kind = "sampled_estimator"

        gate_circuit, gate_params, exprs = rotation_form(circuit)
        self.angle_functions = _AngleFunctions(exprs, [p.name for p in self.parameters])
        self.num_gate_params = len(gate_params)
        if self.kind == "sampled_estimator":
            circuits, self._groups = _measurement_circuits(gate_circuit, self.observables)
        else:
            circuits = [gate_circuit]
        if backend is not None:
            circuits = [self._transpile(c, backend) for c in circuits]
            if self.kind == "estimator" and circuits[0].layout is not None:
                self.observables = [o.apply_layout(circuits[0].layout) for o in self.observables]
        if any(list(c.parameters) != gate_params for c in circuits):
            raise QiskitCircuitError("Transpiling for the backend lost or reordered gate parameters")
        self.circuits = circuits
        self.primitive = self._make_primitive(estimator, sampler)

    @staticmethod
    def _transpile(circuit, backend):
        from qiskit.transpiler import generate_preset_pass_manager

        try:
            return generate_preset_pass_manager(optimization_level=0, backend=backend).run(circuit)
        except Exception as e:
            raise QiskitCircuitError(f"Transpiling the circuit for backend {backend_name(backend)!r} failed: {e}") from e

    def _make_primitive(self, estimator, sampler):
        if self.kind == "estimator":
            if estimator is not None:
                return estimator
            if self.backend is not None and not _is_aer(self.backend):
                raise ValueError(
                    f"shots=None means exact expectation values, which backend {backend_name(self.backend)!r} "
                    "cannot give: pass shots=N, or an exact estimator"
                )
            from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

            if self.backend is not None:  # the user's simulator as it is (noise model included)
                return AerEstimatorV2.from_backend(self.backend)
            return AerEstimatorV2(options={"backend_options": DEFAULT_AER_OPTIONS})
        if sampler is not None:
            return sampler
        if self.backend is None or _is_aer(self.backend):
            # Aer's own sampler binds parameters inside Aer: much faster than binding circuits in Python.
            from qiskit_aer.primitives import SamplerV2 as AerSamplerV2

            if self.backend is not None:
                return AerSamplerV2.from_backend(self.backend, default_shots=self.shots)
            return AerSamplerV2(default_shots=self.shots, options={"backend_options": DEFAULT_AER_OPTIONS})
        from qiskit.primitives import BackendSamplerV2

        return BackendSamplerV2(backend=self.backend, options={"default_shots": self.shots})

    def _reseed(self):
        if self._rng is None:
            return
        seed = int(self._rng.integers(2**31 - 1))
        options = getattr(self.primitive, "options", None)
        if isinstance(getattr(options, "run_options", None), dict) and hasattr(options, "backend_options"):
            options.run_options["seed_simulator"] = seed  # Aer's primitives
        elif hasattr(options, "seed_simulator"):
            options.seed_simulator = seed  # BackendSamplerV2

    # ---- running

    def angles(self, values):
        return self.angle_functions.angles(self._check_values(values))

    def run(self, values):
        return self.run_angles(self.angles(values))

    def run_angles(self, angles):
        """Runs the rotation-form circuit for gate angles [N, G] as one job -> [N, O]."""
        angles = np.asarray(angles, dtype=np.float64)
        rows = angles.shape[0]
        if rows == 0:
            return np.zeros((0, self.num_outputs))
        self._reseed()
        # No parameters: one evaluation, repeated (the PUB would have no batch shape).
        values = angles if self.num_gate_params else None
        repeat = rows if values is None else 1
        try:
            if self.kind == "estimator":
                observables = np.empty((1, len(self.observables)), dtype=object)
                observables[0, :] = self.observables  # np.array() would iterate the operators
                pub = (self.circuits[0], observables, None if values is None else values[:, None, :])
                kwargs = {} if self.shots is None else {"precision": (1.0 + 1e-12) / math.sqrt(self.shots)}
                evs = np.asarray(self._results([pub], **kwargs)[0].data.evs, dtype=np.float64)
                out = evs.reshape(-1, self.num_outputs)
            elif self.kind == "sampled_estimator":
                results = self._results([(c, values) for c in self.circuits], shots=self.shots)
                out = np.zeros((rows // repeat, self.num_outputs))
                for result, terms in zip(results, self._groups):
                    signs = 1.0 - 2.0 * _bits(result, rows // repeat, MEASURE_REGISTER).astype(np.float64)  # [N, shots, qubits]
                    for output, coeff, support in terms:
                        out[:, output] += coeff * np.prod(signs[..., support], axis=-1).mean(axis=1)
            else:
                (result,) = self._results([(self.circuits[0], values)], shots=self.shots)
                bits = _bits(result, rows // repeat)  # [N, shots, clbits], clbit k at index k
                out = (bits @ (2.0 ** np.arange(bits.shape[-1]))).mean(axis=1)[:, None]
        except (BackendJobError, QiskitCircuitError):
            raise
        except Exception as e:
            raise BackendJobError(
                f"The {type(self.primitive).__name__} job on {backend_name(self.backend)!r} failed: "
                f"{type(e).__name__}: {e}"
            ) from e
        return np.repeat(out, repeat, axis=0) if repeat > 1 else out

    def _results(self, pubs, **kwargs):
        return self.primitive.run(pubs, **kwargs).result()

    def vjp(self, values, upstream, differentiator):
        """Gradient of sum(upstream * run(values)) w.r.t. values [B, P]: one job of shifted sets."""
        if not isinstance(differentiator, ParameterShift):
            return super().vjp(values, upstream, differentiator)
        values = self._check_values(values)
        if values.shape[0] == 0 or self.num_gate_params == 0:
            return np.zeros(values.shape)
        angles = self.angle_functions.angles(values)
        results = self.run_angles(differentiator.shifted_values(angles))
        gate_vjp = differentiator.vjp(results, upstream)  # [B, G]
        return np.einsum("bg,bgp->bp", gate_vjp, self.angle_functions.jacobian(values))


def _is_aer(backend):
    return type(backend).__module__.startswith("qiskit_aer")


def _aer_options(backend):
    return {name: getattr(backend.options, name) for name in ("method", "max_parallel_threads")
            if getattr(backend.options, name, None) is not None}


def backend_name(backend):
    if backend is None:
        return "aer_simulator"
    name = getattr(backend, "name", None)
    return name() if callable(name) else (name or type(backend).__name__)


# ------------------------------------------------------------ configuration
#
# Backends and primitives are stored by name and options. Aer's and Qiskit's
# reference ones are rebuilt at load time; any other must be registered with
# `register_backend(name, factory)` in the loading process, otherwise loading
# raises an error that says so (a device handle cannot be stored in a file).

_FACTORIES = {}


def register_backend(name, factory):
    """Makes `name` (a backend's `.name` or a primitive's class name) loadable: `factory()` rebuilds it."""
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {factory!r}")
    _FACTORIES[name] = factory


def backend_to_config(backend):
    if backend is None:
        return None
    config = {"name": backend_name(backend), "class": type(backend).__name__}
    if _is_aer(backend):
        config["options"] = _aer_options(backend)
    return config


def backend_from_config(config):
    if config is None or not isinstance(config, dict):
        return config  # None, or already a backend
    if config["name"] in _FACTORIES:
        return _FACTORIES[config["name"]]()
    if config["class"] == "AerSimulator":
        from qiskit_aer import AerSimulator

        return AerSimulator(**config.get("options", {}))
    raise ValueError(
        f"Cannot rebuild Qiskit backend {config['name']!r} ({config['class']}) from a saved config: call "
        f"qkeras_hybrid.backends.qiskit_executor.register_backend({config['name']!r}, factory) before loading"
    )


_REFERENCE_PRIMITIVES = {
    "qiskit_aer.primitives.EstimatorV2": ("qiskit_aer.primitives", "EstimatorV2"),
    "qiskit_aer.primitives.SamplerV2": ("qiskit_aer.primitives", "SamplerV2"),
    "qiskit.primitives.StatevectorEstimator": ("qiskit.primitives", "StatevectorEstimator"),
    "qiskit.primitives.StatevectorSampler": ("qiskit.primitives", "StatevectorSampler"),
}


def _primitive_class_name(primitive):
    module = type(primitive).__module__
    for prefix in ("qiskit_aer.primitives", "qiskit.primitives"):
        if module.startswith(prefix):
            return f"{prefix}.{type(primitive).__name__}"
    return f"{module}.{type(primitive).__qualname__}"


def primitive_to_config(primitive):
    if primitive is None:
        return None
    config = {"class": _primitive_class_name(primitive)}
    if config["class"] in ("qiskit.primitives.BackendEstimatorV2", "qiskit.primitives.BackendSamplerV2"):
        config["backend"] = backend_to_config(primitive.backend)
    return config


def primitive_from_config(config):
    if config is None or not isinstance(config, dict):
        return config
    name = config["class"]
    if name in _FACTORIES:
        return _FACTORIES[name]()
    if name in _REFERENCE_PRIMITIVES:
        import importlib

        module, cls = _REFERENCE_PRIMITIVES[name]
        return getattr(importlib.import_module(module), cls)()
    if name in ("qiskit.primitives.BackendEstimatorV2", "qiskit.primitives.BackendSamplerV2"):
        from qiskit import primitives

        return getattr(primitives, name.rsplit(".", 1)[1])(backend=backend_from_config(config["backend"]))
    raise ValueError(
        f"Cannot rebuild the Qiskit primitive {name} from a saved config: call "
        f"qkeras_hybrid.backends.qiskit_executor.register_backend({name!r}, factory) before loading"
    )
