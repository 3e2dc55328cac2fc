"""Runs a Qiskit circuit (or a black box) for batches of parameter values.

One job per call: the forward pass of a batch is one job whose PUB holds a
[B, G] parameter array, and the gradient one job over all [2 G B, G] shifted
parameter sets (G parametric gate occurrences; shot-based expectation values
add one circuit per measurement basis to the same job). In training, the
forward pass and the shifted sets share one job (`run_with_jacobian`). Never
a job per sample.

Gradients. The circuit is translated once to a basis whose only parametric
gates are Pauli rotations (rx, ry, rz, rxx, ryy, rzz, rzx), for which the
parameter-shift rule is exact; each parametric gate occurrence gets its own
parameter g_j = e_j(theta) (`e_j` the angle expression in the user's
parameters), the rule differentiates the g_j and the chain rule with
de_j/dtheta (sympy, vectorized over the batch) gives the user's gradient. So
`2*theta`, a parameter used by several gates, `u`, `cp`, `cry` are all exact,
as qiskit-algorithms' gradients do it.

Primitives. Qiskit 2's V2 primitives and `BackendV2.run` only. With
observables and `shots=None`: Aer's EstimatorV2 (exact expectation values).
With `shots=N` and no estimator given: each qubit-wise commuting group of
Pauli terms is measured in its basis with N shots, all groups in one job: real
sampling, not the Gaussian noise Aer's EstimatorV2 adds for a `precision`.
Without observables the circuit's own measurements are sampled and the value
is the mean integer value of the measured bitstring (the Qiskit textbook's sum
of state x probability). Samples come from `AerSimulator.run` with Aer binding
the parameters (default and Aer backends; see `_AerSampling`), a
`BackendSamplerV2` for other backends, or the sampler given.
"""

import contextlib
import json
import math
import os
import random
import warnings

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

    Each circuit has the gates of `circuit` on its qubits and one register,
    clbit q measuring qubit q in the group's basis. Returns (circuits,
    groups): groups[i] lists (output, coefficient, qubits whose Z parities
    make the term) for circuit i; constant terms sit in group 0.
    """
    from qiskit import ClassicalRegister, QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    terms = {}
    for output, observable in enumerate(observables):
        for pauli, coeff in zip(observable.paulis, observable.coeffs):
            if abs(coeff.imag) > 1e-12:
                raise ValueError(f"Observable {output} has a complex coefficient {coeff}; it must be Hermitian")
            terms.setdefault(pauli.to_label(), []).append((output, float(coeff.real)))
    num_qubits = circuit.num_qubits
    identity = "I" * num_qubits
    groups_ops = SparsePauliOp([l for l in terms if l != identity] or [identity]).group_commuting(qubit_wise=True)
    circuits, groups = [], []
    for group in groups_ops:
        basis = {}
        for pauli in group.paulis:
            for q in range(num_qubits):
                if pauli.x[q] or pauli.z[q]:
                    basis[q] = "Y" if (pauli.x[q] and pauli.z[q]) else ("X" if pauli.x[q] else "Z")
        # A fresh circuit without the original clbits: memory slot q is qubit q on every path.
        measured = QuantumCircuit(num_qubits, name=circuit.name)
        for inst in circuit.data:
            if inst.operation.name != "measure":
                measured.append(inst.operation, [circuit.find_bit(q).index for q in inst.qubits])
        for q, axis in sorted(basis.items()):
            if axis == "Y":
                measured.sdg(q)
            if axis in "XY":
                measured.h(q)
        register = ClassicalRegister(num_qubits, MEASURE_REGISTER)
        measured.add_register(register)
        measured.measure(range(num_qubits), register)
        entries = []
        for pauli in group.paulis:
            label = pauli.to_label()
            if label == identity:
                continue
            support = [q for q in range(num_qubits) if pauli.x[q] or pauli.z[q]]
            entries += [(output, coeff, support) for output, coeff in terms.get(label, [])]
        circuits.append(measured)
        groups.append(entries)
    groups[0] += [(output, coeff, []) for output, coeff in terms.get(identity, [])]
    return circuits, groups


def _is_parametric(op):
    return any(getattr(p, "parameters", None) for p in op.params)


class _AngleFunctions:
    """Vectorized e_j(theta) and de_j/dtheta_k from sympy expressions.

    Angles that are linear in the parameters (`theta`, `2*theta`, `a + b +
    0.3`: the usual case) are one matrix product with a constant Jacobian.
    """

    def __init__(self, exprs, names):
        symbols = [sympy.Symbol(n) for n in names]
        self.num_params = len(names)
        self.num_angles = len(exprs)
        derivatives = [[sympy.diff(e, s) for s in symbols] for e in exprs]
        self.linear = all(not d.free_symbols for row in derivatives for d in row)
        if self.linear:
            self.matrix = np.array([[float(d) for d in row] for row in derivatives], dtype=np.float64).reshape(
                self.num_angles, self.num_params)  # [G, P]
            zero = {s: 0 for s in symbols}
            self.offset = np.array([float(e.subs(zero)) for e in exprs], dtype=np.float64)
            return
        self._angles = [sympy.lambdify(symbols, e, "numpy", dummify=True) for e in exprs]
        self._derivatives = [
            [(k, sympy.lambdify(symbols, d, "numpy", dummify=True)) for k, d in enumerate(row) if d != 0]
            for row in derivatives
        ]

    def angles(self, values):
        if self.linear:
            return values @ self.matrix.T + self.offset
        cols = list(values.T)
        out = np.empty((values.shape[0], len(self._angles)))
        for j, f in enumerate(self._angles):
            out[:, j] = np.broadcast_to(np.asarray(f(*cols), dtype=np.float64), values.shape[:1])
        return out

    def jacobian(self, values):
        """de_j/dtheta_k [N, G, P] (for linear angles, the constant [G, P] matrix, which broadcasts)."""
        if self.linear:
            return self.matrix
        cols = list(values.T)
        out = np.zeros((values.shape[0], len(self._angles), self.num_params))
        for j, derivatives in enumerate(self._derivatives):
            for k, f in derivatives:
                out[:, j, k] = np.broadcast_to(np.asarray(f(*cols), dtype=np.float64), values.shape[:1])
        return out


# ------------------------------------------------------------ safety checks


def _is_rust_panic(error):
    """True for pyo3's PanicException: Qiskit's Rust code panicked. It derives from BaseException, not
    Exception, so `except Exception` (and TensorFlow's py_func) would let it through."""
    return type(error).__name__ == "PanicException"


@contextlib.contextmanager
def _panics_as(error_type, what):
    """Re-raises a Rust panic inside the block as `error_type`, a normal exception that names `what`."""
    try:
        yield
    except BaseException as e:
        if not _is_rust_panic(e):
            raise
        raise error_type(f"{what} failed: Qiskit's Rust code panicked ({e}).") from e


def _system_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _format_bytes(size):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            return f"{size:.3g} {unit}"
        size /= 1024


# Dense simulation methods: (state size in qubits per circuit qubit, bytes per entry at double precision).
_DENSE_METHODS = {"statevector": (1, 16), "density_matrix": (2, 16), "unitary": (2, 16), "superop": (4, 16)}


def _dense_simulation(target, parametric):
    """(name, method, qubit factor, bytes per entry, memory limit) if `target` stores a dense state, else None.

    `target` is an Aer or reference primitive, an Aer backend, or None (our
    default AerSimulator). Other backends and primitives are left to check
    their own sizes.
    """
    module = type(target).__module__ if target is not None else "qiskit_aer"
    if target is not None and module.startswith("qiskit.primitives") and type(target).__name__.startswith("Statevector"):
        return type(target).__name__, "statevector", 1, 16, None
    if module.startswith("qiskit_aer.primitives"):
        target = getattr(target, "_backend", None)
        module = type(target).__module__
    elif module.startswith("qiskit.primitives"):  # BackendSamplerV2 / BackendEstimatorV2
        target = getattr(target, "backend", None)
        if target is None:
            return None
        module = type(target).__module__
    if target is not None and not module.startswith("qiskit_aer"):
        return None
    options = target.options if target is not None else None
    method = getattr(options, "method", "automatic") or "automatic"
    if method == "automatic":
        # Aer runs Clifford circuits on its stabilizer method; any rotation angle needs a state vector.
        if not parametric:
            return None
        method = "statevector"
    if method not in _DENSE_METHODS:
        return None  # matrix product states, stabilizers, ...: no dense state
    factor, entry = _DENSE_METHODS[method]
    if getattr(options, "precision", "double") == "single":
        entry //= 2
    limit = getattr(options, "max_memory_mb", None)
    return backend_name(target), method, factor, entry, None if not limit else int(limit) * 2**20


def check_simulable(num_qubits, target, parametric):
    """Raises ValueError if a dense simulation of `num_qubits` cannot fit in memory.

    Checked when the layer is built, before anything is handed to Qiskit or
    Aer: at 35 qubits, an operator made dense by Qiskit's Rust code panics
    (killing the process) and Aer fails only when called.
    """
    dense = _dense_simulation(target, parametric)
    if dense is None:
        return
    name, method, factor, entry, limit = dense
    memory = _system_memory_bytes()
    limit = min(x for x in (limit, memory) if x is not None) if (limit or memory) else None
    required = entry * 2.0 ** (factor * num_qubits)
    if limit is not None and required > limit:
        entries = f"2^{factor * num_qubits}" if factor == 1 else f"(2^{num_qubits})^{factor}"
        raise ValueError(
            f"QiskitLayer: a {num_qubits}-qubit circuit on {name} ({method} method) needs {entries} complex "
            f"amplitudes ({_format_bytes(required)}), more than the {_format_bytes(limit)} of memory available. "
            "Use fewer qubits, or a simulator that does not store the dense state, e.g. "
            "backend=AerSimulator(method='matrix_product_state')."
        )


# ------------------------------------------------------------------ sampling


def _keys_from_bits(bits):
    """Booleans [..., clbits] (clbit k at index k) -> the integers sum_k 2^k b_k, as uint64."""
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[-1], dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)


class _Samples:
    """Outcomes of a batch of shot-based runs of one circuit, as weighted integer keys.

    Entry e says: parameter set `rows[e]` gave the bitstring `keys[e]`
    (clbit k worth 2^k) in a fraction `weights[e]` of its shots. Counts (from
    Aer) and per-shot bit arrays (from a SamplerV2) both fit, and means over
    shots become weighted bincounts.
    """

    def __init__(self, rows, keys, weights):
        self.rows, self.keys, self.weights = rows, keys, weights

    @classmethod
    def from_bits(cls, bits):
        """Booleans [sets, shots, clbits] -> samples."""
        sets, shots = bits.shape[:2]
        return cls(np.repeat(np.arange(sets), shots), _keys_from_bits(bits).ravel(), np.full(sets * shots, 1.0 / shots))

    def mean(self, values, num_rows):
        """The mean over shots of values [entries] per parameter set -> [num_rows]."""
        return np.bincount(self.rows, self.weights * values, minlength=num_rows)


class _AerSampling:
    """Shot-based runs on an AerSimulator: Aer binds the parameters, counts come back.

    Aer's SamplerV2 does the same through `AerSimulator.run`, plus a bit array
    per parameter set; for small circuits that costs more than the
    simulation. Two more savings:

    - Packing. On an ideal simulator, up to `max_copies` parameter sets of a
      small circuit run as copies side by side on disjoint qubits of one
      experiment: their joint state is a product, so each copy's `shots`
      outcomes are drawn from its own distribution and independently of the
      other copies, exactly as from separate experiments, without Aer's fixed
      cost per experiment (about 0.1 ms, more than simulating a few qubits).
      `shots` stays the number of shots of every parameter set.
    - Our own simulator (`owned`: nobody else can change its options) runs
      the circuits assembled once, through the steps of `AerSimulator.run`
      (compile, assemble, bind, execute) minus the per-call assembly and the
      hop to Aer's job thread. A user's simulator goes through `run`.
    """

    # Copies share one state vector of copies x qubits qubits: kept small, so
    # a packed experiment costs less than the experiments it replaces.
    PACKED_QUBITS = 10

    def __init__(self, simulator, circuits, shots, pack, owned=False):
        self.simulator = simulator
        self.circuits = circuits
        self.shots = shots
        self.num_params = len(circuits[0].parameters)
        width = max(max(c.num_qubits for c in circuits), 1)
        clbits = max(max(c.num_clbits for c in circuits), 1)
        if clbits > 64:
            raise QiskitCircuitError(f"Sampled circuits may measure at most 64 clbits, got {clbits}")
        self.max_copies = max(1, min(self.PACKED_QUBITS // width, 64 // clbits)) if pack else 1
        self.owned = owned
        self._entropy = random.Random()
        self._packed = {}
        self._assembled = {}

    def _packed_circuits(self, copies):
        """Each circuit as `copies` copies on disjoint qubits and clbits, and their parameters: copy j's parameter
        for gate angle g at index j G + g."""
        if copies not in self._packed:
            from qiskit import QuantumCircuit
            from qiskit.circuit import ParameterVector

            vectors = [ParameterVector(f"_qkh_copy{j}", self.num_params) for j in range(copies)]
            packed = []
            for circuit in self.circuits:
                params = list(circuit.parameters)
                n, c = circuit.num_qubits, circuit.num_clbits
                out = QuantumCircuit(copies * n, copies * c, name=f"{circuit.name}_x{copies}")
                for j in range(copies):
                    copy = circuit.assign_parameters(dict(zip(params, vectors[j]))) if params else circuit
                    out.compose(copy, qubits=range(j * n, (j + 1) * n), clbits=range(j * c, (j + 1) * c), inplace=True)
                packed.append(out)
            self._packed[copies] = (packed, [p for vector in vectors for p in vector])
        return self._packed[copies]

    def sample(self, angles, seed):
        """Gate angles [N, G] (None: no parameters, one run) -> a `_Samples` per circuit."""
        rows = 1 if angles is None else angles.shape[0]
        copies = min(self.max_copies, rows)
        experiments = -(-rows // copies)
        if copies > 1:
            circuits, parameters = self._packed_circuits(copies)
        else:
            circuits, parameters = self.circuits, list(self.circuits[0].parameters)
        columns = None  # [copies G, experiments]: the values of each parameter, experiment by experiment
        if angles is not None:
            if experiments * copies > rows:  # the last experiment's spare copies repeat the last set
                angles = np.concatenate([angles, np.repeat(angles[-1:], experiments * copies - rows, axis=0)])
            columns = angles.reshape(experiments, copies * self.num_params).T
        if self.owned:
            counts = self._run_assembled(copies, circuits, parameters, columns, seed)
        else:
            binds = None if columns is None else [dict(zip(parameters, columns))] * len(circuits)
            counts = self._run(circuits, binds, seed)
        out = []
        for m, circuit in enumerate(self.circuits):
            histograms = counts[m * experiments:(m + 1) * experiments]
            keys = np.array([int(k, 16) for h in histograms for k in h], dtype=np.uint64)
            weights = np.array([c for h in histograms for c in h.values()], dtype=np.float64) / self.shots
            if experiments > 1:
                experiment = np.repeat(np.arange(experiments), [len(h) for h in histograms])
            else:
                experiment = np.zeros(len(keys), dtype=np.int64)
            if copies > 1:  # copy j's outcome sits in clbits j c .. (j + 1) c - 1 of the experiment's
                clbits = circuit.num_clbits
                copy = np.arange(copies, dtype=np.uint64)[:, None]
                keys = ((keys[None, :] >> (copy * np.uint64(clbits))) & np.uint64((1 << clbits) - 1)).ravel()
                experiment = (experiment[None, :] * copies + copy.astype(np.int64)).ravel()
                weights = weights[None, :].repeat(copies, axis=0).ravel()
                if experiments * copies > rows:
                    real = experiment < rows  # not a padding copy
                    keys, experiment, weights = keys[real], experiment[real], weights[real]
            out.append(_Samples(experiment, keys, weights))
        return out

    def _run(self, circuits, binds, seed):
        """Counts (hex bitstring -> count) of every experiment, through `AerSimulator.run`."""
        options = {"shots": self.shots}
        if seed is not None:
            options["seed_simulator"] = seed
        if binds is not None:
            options["parameter_binds"] = binds
        result = self.simulator.run(circuits, **options).result()
        if not result.success:
            failed = [r.status for r in result.results if not r.success]
            raise BackendJobError(f"The simulation failed: {failed[0] if failed else result.status}")
        return [experiment.data.counts for experiment in result.results]

    def _run_assembled(self, key, circuits, parameters, columns, seed):
        """As `_run`, with the circuits assembled for Aer's C++ controller once: the steps of
        `AerBackend._execute_circuits_job` minus the per-call assembly (a test checks that both give the same
        counts for the same seed). `columns[i]` holds the values of `parameters[i]`, one per experiment."""
        simulator = self.simulator
        if key not in self._assembled:
            from qiskit_aer.backends.aer_compiler import assemble_circuits, generate_aer_config
            from qiskit_aer.backends.backend_utils import LIBRARY_DIR

            compiled, noise_model = simulator._compile(circuits)
            if noise_model is not None:
                raise QiskitCircuitError("Our own simulator has no noise model")
            aer_circuits, index_maps = assemble_circuits(compiled)
            for i, aer_circuit in enumerate(aer_circuits):
                aer_circuit.circ_id = i
            # Where each parameter goes: (operation index in the Aer circuit, parameter position), as
            # AerBackend._convert_circuit_binds finds them (our gate parameters are plain Parameters), and
            # which column holds its values.
            column = {p: i for i, p in enumerate(parameters)}
            slots = [[((index_map[i] if index_map else i, position), column[param])
                      for i, inst in enumerate(circuit.data) if inst.operation.is_parameterized()
                      for position, param in enumerate(inst.operation.params)]
                     for circuit, index_map in zip(compiled, index_maps)]
            config = generate_aer_config(compiled, simulator.options, shots=self.shots)
            config.library_dir = LIBRARY_DIR
            self._assembled[key] = (aer_circuits, slots, config)
        aer_circuits, slots, config = self._assembled[key]
        # Always set: the controller keeps the seed it drew in the (reused) config otherwise.
        config.seed_simulator = seed if seed is not None else self._entropy.randrange(2**31 - 1)
        if columns is not None:
            values = columns.tolist()
            config.parameterizations = [[[slot, values[i]] for slot, i in circuit_slots] for circuit_slots in slots]
        output = simulator._controller.execute(aer_circuits, {}, config)
        if not isinstance(output, dict) or not output.get("success", False):
            status = output.get("status") if isinstance(output, dict) else output
            raise BackendJobError(f"The simulation failed: {status}")
        return [experiment["data"]["counts"] for experiment in output["results"]]


def _packable(backend):
    """Whether copies of a circuit side by side on `backend` sample like separate runs: an ideal simulator whose
    method samples a product state as such, with no coupling map to route copies over."""
    if backend is None:
        return True
    if not _is_aer(backend) or type(backend).__name__ != "AerSimulator" or getattr(backend, "_from_backend", True):
        return False
    options = backend.options
    return (getattr(options, "noise_model", None) is None
            and getattr(options, "method", None) in ("automatic", "statevector")
            and backend.configuration().coupling_map is None)


# ---------------------------------------------------------------- executors


class _Executor:
    """Common interface: `run(values [N, P]) -> [N, O]`, `vjp(values, upstream, differentiator)` and
    `run_with_jacobian(values, differentiator) -> ([N, O], [N, O, P])`."""

    num_params = 0
    num_outputs = 0

    def _check_values(self, values):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.num_params:
            raise ValueError(f"Expected parameter values of shape [batch, {self.num_params}], got {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("Parameter values must be finite (got NaN or inf)")
        return values

    def vjp(self, values, upstream, differentiator):
        """d(sum(upstream * run(values)))/d values, by central shifts of the values themselves."""
        values = self._check_values(values)
        if values.shape[0] == 0 or self.num_params == 0:
            return np.zeros(values.shape)
        return differentiator.vjp(self.run(differentiator.shifted_values(values)), upstream)

    def run_with_jacobian(self, values, differentiator):
        """run(values) and its Jacobian [N, O, P] from one job of the values and their shifted copies."""
        values = self._check_values(values)
        batch = values.shape[0]
        if batch == 0 or self.num_params == 0:
            outputs = self.run(values)
            return outputs, np.zeros((batch, outputs.shape[1], self.num_params))
        results = self.run(np.concatenate([values, differentiator.shifted_values(values)]))
        return results[:batch], differentiator.jacobian(results[batch:], batch, self.num_params)


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
        self._rng = random.Random(seed) if seed is not None else None
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
        check_simulable(circuit.num_qubits, estimator or sampler or backend,
                        parametric=any(_is_parametric(inst.operation) for inst in circuit.data))

        with _panics_as(QiskitCircuitError, "Preparing the circuit for Qiskit"):
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
        # Built element by element: assigning the list at once makes numpy call SparsePauliOp.__array__, a
        # dense 2^n x 2^n matrix per observable (seconds at 12 qubits, a Rust panic at 35).
        self._observables_array = np.empty((1, len(self.observables)), dtype=object)
        for i, observable in enumerate(self.observables):
            self._observables_array[0, i] = observable
        self._aer_sampling = None
        self._shift_offsets = {}
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
            from qiskit_aer import AerSimulator

            # The user's simulator as it is (noise model included), or ours: for rotations by any angle Aer's
            # automatic method picks the state vector anyway, after a check per experiment.
            method = {"method": "statevector"} if self.num_gate_params else {}
            simulator = self.backend if self.backend is not None else AerSimulator(**DEFAULT_AER_OPTIONS, **method)
            self._aer_sampling = _AerSampling(simulator, self.circuits, self.shots, pack=_packable(self.backend),
                                              owned=self.backend is None)
            return None
        from qiskit.primitives import BackendSamplerV2

        return BackendSamplerV2(backend=self.backend, options={"default_shots": self.shots})

    def _next_seed(self):
        return None if self._rng is None else self._rng.randrange(2**31 - 1)

    def _reseed(self, seed):
        if seed is None:
            return
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
        seed = self._next_seed()
        # No parameters: one evaluation, repeated (the PUB would have no batch shape).
        values = angles if self.num_gate_params else None
        repeat = rows if values is None else 1
        runner = "AerSimulator" if self._aer_sampling is not None else type(self.primitive).__name__
        try:
            if self.kind == "estimator":
                self._reseed(seed)
                pub = (self.circuits[0], self._observables_array, None if values is None else values[:, None, :])
                kwargs = {} if self.shots is None else {"precision": (1.0 + 1e-12) / math.sqrt(self.shots)}
                evs = np.asarray(self._results([pub], **kwargs)[0].data.evs, dtype=np.float64)
                out = evs.reshape(-1, self.num_outputs)
            else:
                out = self._sampled_outputs(self._samples(values, seed), rows // repeat)
        except (BackendJobError, QiskitCircuitError):
            raise
        except Exception as e:
            raise BackendJobError(
                f"The {runner} job on {backend_name(self.backend)!r} failed: {type(e).__name__}: {e}"
            ) from e
        except BaseException as e:
            if not _is_rust_panic(e):
                raise
            raise BackendJobError(
                f"The {runner} job on {backend_name(self.backend)!r} failed: Qiskit's Rust code panicked ({e})"
            ) from e
        return np.repeat(out, repeat, axis=0) if repeat > 1 else out

    def _samples(self, values, seed):
        """One job sampling every circuit for every parameter set -> a `_Samples` per circuit."""
        if self._aer_sampling is not None:
            return self._aer_sampling.sample(values, seed)
        self._reseed(seed)
        rows = 1 if values is None else values.shape[0]
        results = self._results([(c, values) for c in self.circuits], shots=self.shots)
        register = MEASURE_REGISTER if self.kind == "sampled_estimator" else None
        return [_Samples.from_bits(_bits(result, rows, register)) for result in results]

    def _sampled_outputs(self, samples, rows):
        out = np.zeros((rows, self.num_outputs))
        if self.kind == "sampler":
            (sampled,) = samples
            out[:, 0] = sampled.mean(sampled.keys.astype(np.float64), rows)
            return out
        for sampled, terms in zip(samples, self._groups):
            for output, coeff, support in terms:
                mask = np.uint64(sum(1 << q for q in support))
                signs = 1.0 - 2.0 * (np.bitwise_count(sampled.keys & mask) & 1)
                out[:, output] += coeff * sampled.mean(signs, rows)
        return out

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
        results = self.run_angles(self._shifted(angles, differentiator))
        gate_vjp = differentiator.vjp(results, upstream)  # [B, G]
        return np.matmul(gate_vjp[:, None, :], self.angle_functions.jacobian(values))[:, 0, :]

    def _shifted(self, angles, differentiator):
        """`differentiator.shifted_values(angles)`, from offsets computed once: a shift rule moves every point
        the same way, and this runs in every training step."""
        key = (type(differentiator), differentiator.shift)
        if self._shift_offsets.get("key") != key:
            offsets = differentiator.shifted_values(np.zeros((1, self.num_gate_params)))  # [2G, G]
            self._shift_offsets = {"key": key, "offsets": offsets[:, None, :]}
        return (self._shift_offsets["offsets"] + angles[None]).reshape(-1, self.num_gate_params)

    def run_with_jacobian(self, values, differentiator):
        """run(values) and d run / d values [B, O, P], from one job of the angles and their shifts."""
        if not isinstance(differentiator, ParameterShift):
            return super().run_with_jacobian(values, differentiator)
        values = self._check_values(values)
        batch = values.shape[0]
        angles = self.angle_functions.angles(values)
        if batch == 0 or self.num_gate_params == 0:
            return self.run_angles(angles), np.zeros((batch, self.num_outputs, self.num_params))
        results = self.run_angles(np.concatenate([angles, self._shifted(angles, differentiator)]))
        gate_jacobian = differentiator.jacobian(results[batch:], batch, self.num_gate_params)  # [B, O, G]
        return results[:batch], np.matmul(gate_jacobian, self.angle_functions.jacobian(values))


def _bits(pub_result, rows, register=None):
    """A sampler PUB result as booleans [rows, shots, clbits], clbit k at index k."""
    data = pub_result.join_data() if register is None else getattr(pub_result.data, register)
    bits = data.to_bool_array(order="little")
    return bits.reshape(rows, -1, bits.shape[-1])


def _is_aer(backend):
    return type(backend).__module__.startswith("qiskit_aer")


def backend_name(backend):
    if backend is None:
        return "aer_simulator"
    name = getattr(backend, "name", None)
    return name() if callable(name) else (name or type(backend).__name__)


# ------------------------------------------------------------ configuration
#
# A `.keras` file stores what rebuilds the backend or primitive. An
# AerSimulator is stored whole: its options that differ from the defaults,
# its noise model, basis gates and coupling map. Aer's and Qiskit's reference
# primitives are stored with their options and backend. Anything else (a
# device, a fake device, AerSimulator.from_backend(device), a user class) is
# a handle that no file can hold: saving it raises an error, unless it was
# registered with `register_backend(name, factory)`; it is then stored by name
# and the loading process must register the same name.

_FACTORIES = {}


def register_backend(name, factory):
    """Makes `name` (a backend's `.name` or a primitive's class name) savable and loadable: `factory()` rebuilds it."""
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {factory!r}")
    _FACTORIES[name] = factory


class UnsavableBackendError(TypeError):
    """A backend or primitive that a saved config cannot hold."""


def _unsavable(what, name, reason):
    return UnsavableBackendError(
        f"Cannot save the Qiskit {what} {name!r}: {reason}. Register a factory that rebuilds it, "
        f"qkeras_hybrid.backends.qiskit_executor.register_backend({name!r}, factory), before saving and before "
        "loading; the file then stores the name."
    )


def _json_safe(value, what):
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise UnsavableBackendError(f"Cannot save {what}: {value!r} is not JSON-serializable ({e})") from e
    return value


def _encode_arrays(value):
    """Numpy arrays and complex numbers (in a noise model's dict) as JSON-safe tagged dicts."""
    if isinstance(value, dict):
        return {k: _encode_arrays(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_arrays(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": str(value.dtype), "real": np.real(value).tolist(), "imag": np.imag(value).tolist()}
    if isinstance(value, (complex, np.complexfloating)):
        return {"__complex__": [float(value.real), float(value.imag)]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_arrays(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            array = np.asarray(value["real"]) + 1j * np.asarray(value["imag"])
            return array.astype(value["__ndarray__"]) if value["__ndarray__"].startswith("complex") else \
                np.real(array).astype(value["__ndarray__"])
        if "__complex__" in value:
            return complex(*value["__complex__"])
        return {k: _decode_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_arrays(v) for v in value]
    return value


def noise_model_to_config(noise_model):
    # serializable=True would write complex Kraus matrices as pairs that from_dict cannot read back.
    return {"errors": _encode_arrays(noise_model.to_dict())["errors"], "basis_gates": list(noise_model.basis_gates)}


def noise_model_from_config(config):
    from qiskit_aer.noise import NoiseModel

    with warnings.catch_warnings():
        # Deprecated since Aer 0.15 but still the one reader of to_dict's format (pinned Aer 0.18.2).
        warnings.simplefilter("ignore", DeprecationWarning)
        noise_model = NoiseModel.from_dict({"errors": _decode_arrays(config["errors"])})
    # from_dict starts from NoiseModel()'s default basis; the basis decides what circuits are transpiled to.
    basis = set(config["basis_gates"])
    if set(noise_model.basis_gates) != basis:
        noise_model._basis_gates = basis
    return noise_model


# Configuration fields an AerSimulator takes as options; the others in its configuration follow from the method.
_AER_CONFIGURATION_OPTIONS = ("basis_gates", "coupling_map")
_AER_DERIVED_CONFIGURATION = ("description", "n_qubits")


def _aer_simulator_config(backend):
    name = backend_name(backend)
    if type(backend).__name__ != "AerSimulator":
        raise _unsavable("backend", name, f"{type(backend).__name__} is not Aer's AerSimulator")
    if getattr(backend, "_from_backend", False):
        raise _unsavable("backend", name, "it was built from a device (AerSimulator.from_backend), whose target "
                         "(gates, errors, timings) a saved config does not hold")
    defaults = type(backend)._default_options()
    options = {}
    for key, value in backend.options.__dict__.items():
        if key == "noise_model" or value == getattr(defaults, key, None):
            continue
        options[key] = _json_safe(value, f"option {key} of Qiskit backend {name!r}")
    configuration = dict(getattr(backend, "_options_configuration", {}))
    unknown = sorted(set(configuration) - set(_AER_CONFIGURATION_OPTIONS) - set(_AER_DERIVED_CONFIGURATION))
    if unknown or getattr(backend, "_options_properties", None):
        raise _unsavable("backend", name, f"its configuration fields {unknown or 'properties'} are not stored")
    for key in _AER_CONFIGURATION_OPTIONS:
        if configuration.get(key) is not None:
            value = configuration[key]
            if hasattr(value, "get_edges"):  # a CouplingMap
                value = [list(edge) for edge in value.get_edges()]
            options[key] = _json_safe([list(v) if isinstance(v, tuple) else v for v in value],
                                      f"{key} of Qiskit backend {name!r}")
    noise_model = getattr(backend.options, "noise_model", None)
    return {
        "name": name,
        "class": "AerSimulator",
        "options": options,
        "noise_model": None if noise_model is None else noise_model_to_config(noise_model),
    }


def backend_to_config(backend):
    """A JSON-safe config that rebuilds `backend`; raises UnsavableBackendError where none can."""
    if backend is None:
        return None
    name = backend_name(backend)
    if name in _FACTORIES:
        return {"name": name, "class": type(backend).__name__, "registered": True}
    if _is_aer(backend):
        return _aer_simulator_config(backend)
    raise _unsavable("backend", name, f"a {type(backend).__name__} is a handle to a device or a program, "
                     "not data a file can hold")


def backend_from_config(config):
    if config is None or not isinstance(config, dict):
        return config  # None, or already a backend
    if config["name"] in _FACTORIES:
        return _FACTORIES[config["name"]]()
    if config["class"] == "AerSimulator" and not config.get("registered"):
        from qiskit_aer import AerSimulator

        options = dict(config.get("options", {}))
        if config.get("noise_model") is not None:
            options["noise_model"] = noise_model_from_config(config["noise_model"])
        return AerSimulator(**options)
    raise ValueError(
        f"Cannot rebuild Qiskit backend {config['name']!r} ({config['class']}) from a saved config: call "
        f"qkeras_hybrid.backends.qiskit_executor.register_backend({config['name']!r}, factory) before loading"
    )


# name -> (module, class, the options stored: constructor argument -> how to read it from the primitive)
_REFERENCE_PRIMITIVES = {
    "qiskit_aer.primitives.EstimatorV2": ("qiskit_aer.primitives", "EstimatorV2"),
    "qiskit_aer.primitives.SamplerV2": ("qiskit_aer.primitives", "SamplerV2"),
    "qiskit.primitives.StatevectorEstimator": ("qiskit.primitives", "StatevectorEstimator"),
    "qiskit.primitives.StatevectorSampler": ("qiskit.primitives", "StatevectorSampler"),
    "qiskit.primitives.BackendEstimatorV2": ("qiskit.primitives", "BackendEstimatorV2"),
    "qiskit.primitives.BackendSamplerV2": ("qiskit.primitives", "BackendSamplerV2"),
}


def _primitive_class_name(primitive):
    module = type(primitive).__module__
    for prefix in ("qiskit_aer.primitives", "qiskit.primitives"):
        if module.startswith(prefix):
            return f"{prefix}.{type(primitive).__name__}"
    return f"{module}.{type(primitive).__qualname__}"


def _primitive_arguments(primitive, name):
    """The constructor arguments (besides the backend) that rebuild a reference primitive."""
    import dataclasses

    what = f"the options of the Qiskit primitive {name}"
    cls = name.rsplit(".", 1)[1]
    if name.startswith("qiskit_aer."):
        options = primitive.options
        arguments = {"options": {"run_options": _json_safe(dict(options.run_options), what)}}
        if cls == "EstimatorV2":
            arguments["options"]["default_precision"] = _json_safe(options.default_precision, what)
        else:
            arguments["default_shots"] = _json_safe(primitive.default_shots, what)
            arguments["seed"] = _json_safe(primitive.seed, what)
        return arguments
    if cls == "StatevectorEstimator":
        return {"default_precision": primitive.default_precision, "seed": _json_safe(primitive.seed, what)}
    if cls == "StatevectorSampler":
        return {"default_shots": primitive.default_shots, "seed": _json_safe(primitive.seed, what)}
    return {"options": _json_safe(dataclasses.asdict(primitive.options), what)}  # Backend{Estimator,Sampler}V2


def primitive_to_config(primitive):
    """A JSON-safe config that rebuilds `primitive`; raises UnsavableBackendError where none can."""
    if primitive is None:
        return None
    name = _primitive_class_name(primitive)
    if name in _FACTORIES:
        return {"class": name, "registered": True}
    if name not in _REFERENCE_PRIMITIVES:
        raise _unsavable("primitive", name, "only Aer's and Qiskit's reference primitives are stored with their "
                         "options")
    config = {"class": name, "arguments": _primitive_arguments(primitive, name)}
    backend = getattr(primitive, "_backend", None) if name.startswith("qiskit_aer.") else getattr(primitive, "backend", None)
    if backend is not None:
        config["backend"] = backend_to_config(backend)
    return config


def primitive_from_config(config):
    if config is None or not isinstance(config, dict):
        return config
    name = config["class"]
    if name in _FACTORIES:
        return _FACTORIES[name]()
    if name in _REFERENCE_PRIMITIVES and not config.get("registered"):
        import importlib

        module, cls = _REFERENCE_PRIMITIVES[name]
        cls = getattr(importlib.import_module(module), cls)
        arguments = dict(config.get("arguments", {}))
        backend = backend_from_config(config.get("backend"))
        if name.startswith("qiskit_aer."):
            return cls(**arguments) if backend is None else cls.from_backend(backend, **arguments)
        if backend is not None:
            arguments["backend"] = backend
        return cls(**arguments)
    raise ValueError(
        f"Cannot rebuild the Qiskit primitive {name} from a saved config: call "
        f"qkeras_hybrid.backends.qiskit_executor.register_backend({name!r}, factory) before loading"
    )
