"""compile_circuit: a Cirq or Qiskit circuit + observables -> a runnable program."""

import dataclasses

import numpy as np
import sympy
import tensorflow as tf

import cirq

from qkeras_hybrid import ops
from qkeras_hybrid import noise as noise_lib
from qkeras_hybrid.circuits import cirq_compiler, noisy as noisy_lib, observables as obs_lib, qiskit_compiler
from qkeras_hybrid.circuits.angles import AngleMap
from qkeras_hybrid.circuits.program import EXPONENTIAL, bind_angle, build_program


# From this many qubits on, `CompiledCircuit.expectation` runs the forward op
# that also outputs each sample's final state, and its gradient un-applies the
# circuit from that state instead of running the forward sweep again. Below,
# that sweep is cheap and copying the states out (and keeping them for the
# gradient) is pure overhead; from 12 qubits on the repeated forward sweep is
# about 17% of forward + gradient.
STATE_REUSE_QUBITS = 12


def _may_differentiate():
    """False only when this call's result cannot be differentiated: eagerly,
    with no gradient tape recording. (A graph may be differentiated later by
    `tf.gradients`; there an unused final state is never computed.)"""
    if not tf.executing_eagerly():
        return True
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TF without this module
        return True
    return record.could_possibly_record()


def is_qiskit_circuit(circuit):
    try:
        from qiskit import QuantumCircuit
    except ImportError:  # pragma: no cover - qiskit is a dependency
        return False
    return isinstance(circuit, QuantumCircuit)


def _symbol(s):
    """A symbol given as sympy.Symbol, str or qiskit Parameter."""
    if isinstance(s, sympy.Symbol):
        return s
    if isinstance(s, str):
        return sympy.Symbol(s)
    if hasattr(s, "sympify"):  # qiskit Parameter
        return sympy.sympify(s.sympify())
    raise TypeError(f"Symbol {s!r} must be a sympy.Symbol, a string or a qiskit Parameter")


def _as_list(observables):
    if isinstance(observables, (list, tuple)):
        return list(observables)
    return [observables]


def circuit_symbols(circuit):
    """The circuit's symbols: Cirq sorted by name, Qiskit in circuit order."""
    if is_qiskit_circuit(circuit):
        return [qiskit_compiler.parameter_expr(p) for p in circuit.parameters]
    if isinstance(circuit, cirq.Circuit):
        return sorted(cirq.parameter_symbols(circuit), key=str)
    raise TypeError(
        f"circuit must be a cirq.Circuit or a qiskit.QuantumCircuit, got {type(circuit).__name__}"
    )


def check_symbol_names(names, circuit_names):
    """ValueError if a symbol name is listed twice or is not one of the circuit's."""
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Symbols {duplicates} are listed more than once")
    unknown = sorted(set(names) - set(circuit_names))
    if unknown:
        raise ValueError(f"Symbols {unknown} do not appear in the circuit")


class CompiledCircuit:
    """A circuit compiled once into the native op's numeric program.

    Args:
      circuit: a `cirq.Circuit` with sympy parameters, or a
        `qiskit.QuantumCircuit` with `Parameter`s.
      observables: one or a list of `cirq.PauliSum`/`cirq.PauliString` (Cirq)
        or `SparsePauliOp`/`Pauli` (Qiskit).
      symbols: the order of the symbol values fed at run time. Defaults to
        the circuit's symbols (Cirq: sorted by name; Qiskit: circuit order).
      qubits: Cirq only, the qubit register (defaults to the sorted qubits
        of the circuit).
      max_fused_qubits: block size of the gate fuser (default by size).
      noise: None, or anything `qkeras_hybrid.noise.resolve` accepts (a
        `cirq.NoiseModel`, a per-gate table, a `qiskit_aer.noise.NoiseModel`,
        a `NoiseSpec`). Channels already in the circuit count as noise too.
      simulation: for a noisy circuit: `"density_matrix"` (exact),
        `"trajectories"` (unbiased Monte-Carlo estimates) or `"auto"` (the
        density matrix up to 12 qubits); see `qkeras_hybrid.circuits.noisy`.
      trajectories: trajectories per batch row (default 100).

    A noisy circuit's `noisy` attribute is its `NoisyProgram` (None for a
    noiseless one), and `program` / `program_inputs` are then that of the
    density matrix (2n qubits) or of the trajectories.
    """

    def __init__(self, circuit, observables, symbols=None, qubits=None, max_fused_qubits=None, noise=None,
                 simulation="auto", trajectories=None):
        observables = _as_list(observables)
        if not observables:
            raise ValueError("At least one observable is required")
        simulation, trajectories = noisy_lib.check_simulation(simulation, trajectories, "CompiledCircuit")
        spec = noise_lib.resolve(noise, circuit.num_qubits if is_qiskit_circuit(circuit) else None)
        if spec is not None and spec.has_channels:
            if isinstance(circuit, cirq.Circuit) and qubits is None:
                qubits = sorted(circuit.all_qubits())
            circuit = spec.apply(circuit, qubits)
        if is_qiskit_circuit(circuit):
            self.num_qubits = circuit.num_qubits
            primitives = qiskit_compiler.lower_circuit(circuit)
            terms = [obs_lib.qiskit_terms(o, self.num_qubits) for o in observables]
        elif isinstance(circuit, cirq.Circuit):
            if qubits is None:
                qubits = sorted(circuit.all_qubits())
                if not qubits:
                    raise ValueError("The circuit has no qubits; pass qubits=... to name the register")
            qubits = list(qubits)
            self.qubits = qubits
            self.num_qubits = len(qubits)
            primitives = cirq_compiler.lower_circuit(circuit, qubits)
            index_of = {q: i for i, q in enumerate(qubits)}
            terms = [obs_lib.cirq_terms(o, index_of) for o in observables]
        else:
            raise TypeError(
                f"circuit must be a cirq.Circuit or a qiskit.QuantumCircuit, got {type(circuit).__name__}"
            )
        known_symbols = circuit_symbols(circuit)
        if symbols is None:
            symbols = known_symbols
        self.symbols = [_symbol(s) for s in symbols]
        check_symbol_names([str(s) for s in self.symbols], [str(s) for s in known_symbols])
        by_name = {str(s): s for s in self.symbols}
        bound = []
        for primitive in primitives:
            if not primitive.is_constant and not primitive.is_channel:
                free = {str(s) for s in primitive.angle.free_symbols}
                missing = sorted(free - set(by_name))
                if missing:
                    raise ValueError(f"Circuit symbols {missing} are not given values: add them to `symbols`")
                angle = primitive.angle.subs({s: by_name[str(s)] for s in primitive.angle.free_symbols})
                primitive = dataclasses.replace(primitive, angle=angle)
            bound.extend([primitive] if primitive.is_channel else bind_angle(primitive, self.symbols))
        self.num_observables = len(observables)
        readout = None
        if spec is not None:
            readout = spec.readout_error(self.qubits if hasattr(self, "qubits") else self.num_qubits)
        # A noisy circuit runs as a density matrix or as trajectories; the
        # noiseless program below is not built for it.
        self.noisy = None
        if readout is not None or any(p.is_channel for p in bound):
            self.noisy = noisy_lib.NoisyProgram(bound, self.num_qubits, terms, self.symbols, readout, simulation,
                                                trajectories)
            self.program, self.angle_map = self.noisy.program, self.noisy.angle_map
            self._program_inputs = self.noisy.program_inputs
            return
        self.program = build_program(self.num_qubits, bound, terms, self.symbols, max_fused_qubits)
        self.angle_map = AngleMap(self.program.angle_exprs, self.symbols)
        with tf.init_scope():  # eager constants, captured by any graph that uses them
            self._program_inputs = tuple(tf.constant(a) for a in self.program.as_tuple())

    @property
    def symbol_names(self):
        return [str(s) for s in self.symbols]

    @property
    def num_angles(self):
        return self.angle_map.num_angles

    @property
    def program_inputs(self):
        """The op's six program tensors."""
        return self._program_inputs

    def angles(self, symbol_values):
        return self.angle_map(symbol_values)

    def _symbol_values(self, symbol_values, dtype):
        values = tf.convert_to_tensor(symbol_values)
        if values.dtype != dtype:
            values = tf.cast(values, dtype)
        if values.shape.rank != 2 or (values.shape[1] is not None and values.shape[1] != len(self.symbols)):
            raise ValueError(
                f"symbol_values must have shape [batch, {len(self.symbols)}] "
                f"(symbols {self.symbol_names}), got {values.shape}"
            )
        return values

    def expectation(self, symbol_values, dtype=tf.float32, seed=None):
        """<O_o> for each row of symbol values [B, S] -> [B, O]; differentiable.

        A noisy circuit gives tr(O_o rho); run as trajectories it needs
        `seed` (int64 `[2]`), from which the Kraus picks are drawn.

        From `STATE_REUSE_QUBITS` qubits on, where the result may be
        differentiated, this runs `ops.expectation_and_state`, whose gradient
        starts from the saved final states instead of simulating the circuit
        again.
        """
        values = self._symbol_values(symbol_values, dtype)
        if self.noisy is not None:
            return self.noisy.expectation(values, seed)
        if self.num_qubits >= STATE_REUSE_QUBITS and _may_differentiate():
            expectations, _ = ops.expectation_and_state(*self._program_inputs, self.angles(values))
            return expectations
        return ops.expectation(*self._program_inputs, self.angles(values))

    def expectation_from_state(self, initial_state, symbol_values, dtype=tf.float32):
        """<psi|U^dagger O_o U|psi> [B, O], the circuit U run from states psi.

        Args:
          initial_state: `[B, 2**n]` (complex or real amplitudes), or
            `[B, 2, 2**n]` real (real parts, then imaginary parts), in this library's amplitude order:
            bit q of the index is register qubit q (the reverse of Cirq's
            `final_state_vector`; see `qkeras_hybrid.circuits.cirq_to_native_order`).
            Used as given, not renormalized.
          symbol_values: `[B, S]`.

        Differentiable with respect to both.
        """
        values = self._symbol_values(symbol_values, dtype)
        if self.noisy is not None:
            raise NotImplementedError("Noisy circuits do not take initial states (circuit inputs) yet")
        state = tf.convert_to_tensor(initial_state)
        if state.dtype.is_complex:
            state = tf.stack([tf.math.real(state), tf.math.imag(state)], axis=1)
        if state.dtype != dtype:
            state = tf.cast(state, dtype)
        if state.shape.rank == 2:  # real amplitudes
            state = tf.stack([state, tf.zeros_like(state)], axis=1)
        size = 2**self.num_qubits
        if state.shape.rank != 3 or state.shape[1] != 2 or state.shape[2] not in (None, size):
            raise ValueError(
                f"initial_state must have shape [batch, {size}] or [batch, 2, {size}] "
                f"(real, imaginary) for {self.num_qubits} qubits, got {tuple(state.shape)}"
            )
        return ops.expectation_from_state(*self._program_inputs, state, self.angles(values))

    def sampled_expectation(self, symbol_values, shots, seed, differentiator="parameter_shift", dtype=tf.float32):
        """<O_o> [B, O] estimated from `shots` measurements per qubit-wise commuting group of terms.

        Args:
          symbol_values: `[B, S]`.
          shots: measurements per batch row and commuting group.
          seed: int64 `[2]`: the forward pass and the gradient draw from two
            seeds split from it.
          differentiator: `"parameter_shift"` (the shift rule of each gate,
            estimated with the same shots: unbiased, what hardware does),
            `"finite_difference"` or a `FiniteDifference(step)` (central
            differences of the sampled values), or `"adjoint"` (the exact
            gradient of the analytic expectation: a simulator's privilege).

        Gradients are taken per gate (each exponential gate gets its own angle
        slot) and mapped back to the symbols by TF's chain rule, so shared and
        transformed symbols are fine. All shifted angle sets of the batch go
        to the simulator in one call.
        """
        from qkeras_hybrid.ops import measure

        values = self._symbol_values(symbol_values, dtype)
        if self.noisy is not None:
            return self.noisy.sampled_expectation(values, shots, seed, differentiator)
        per_gate = self._per_gate_program()
        program, sources = per_gate["program"], per_gate["sources"]
        gate_angles = tf.gather(self.angles(values), sources, axis=1)

        def sampled(angles, seed):
            return measure.sampled_expectation(program, angles, shots, seed)

        def exact_gradient(angles, upstream):
            return ops.expectation_adjoint_grad(*program, angles, upstream)

        return sampled_with_gradient(gate_angles, seed, sampled, exact_gradient, per_gate["eigenvalues"],
                                     differentiator, self.num_observables)

    def probabilities(self, symbol_values, qubit_indices, dtype=tf.float32, seed=None):
        """Exact marginal probabilities [B, 2**k] of register qubits `qubit_indices`
        (the first most significant), readout errors included; differentiable.
        A noisy circuit run as trajectories estimates them, drawing from `seed`."""
        from qkeras_hybrid.ops import measure

        values = self._symbol_values(symbol_values, dtype)
        if self.noisy is not None:
            return self.noisy.probabilities(values, qubit_indices, seed)
        return measure.probabilities(self._program_inputs, self.angles(values), qubit_indices)

    def sample(self, symbol_values, qubit_indices, shots, seed, dtype=tf.float32):
        """int32 [B, shots, k] measured bits of `qubit_indices` (bit j = qubit_indices[j]),
        readout errors included; no gradient."""
        from qkeras_hybrid.ops import measure

        values = tf.stop_gradient(self._symbol_values(symbol_values, dtype))
        if self.noisy is not None:
            return self.noisy.sample(values, qubit_indices, shots, seed)
        return measure.sample(self._program_inputs, self.angles(values), qubit_indices, shots, seed)

    def _per_gate_program(self):
        """The program with every exponential gate reading its own angle slot.

        Returns a dict: `program` (the six tensors), `sources` (the slot of
        `self.angles` each gate's slot copies) and `eigenvalues` (of each
        gate's generator: U(a) = sum_t exp(-i a e_t) P_t).
        """
        if getattr(self, "_per_gate", None) is None:
            gate_meta = self.program.gate_meta.copy()
            gates = np.flatnonzero(gate_meta[:, 0] == EXPONENTIAL)
            sources = gate_meta[gates, 1].astype(np.int32)
            gate_meta[gates, 1] = np.arange(len(gates))
            dim_of_gate = np.zeros(len(gate_meta), np.int64)
            for row in self.program.block_meta:
                dim_of_gate[row[5]:row[5] + row[6]] = 2 ** row[0]
            eigenvalues = []
            for g in gates:
                _, _, offset, terms = gate_meta[g]
                stride = 1 + 2 * dim_of_gate[g] ** 2
                eigenvalues.append(self.program.gate_data[offset + stride * np.arange(terms)])
            with tf.init_scope():
                tensors = list(self._program_inputs)
                tensors[2] = tf.constant(gate_meta)
            self._per_gate = {"program": tuple(tensors), "sources": sources, "eigenvalues": eigenvalues}
        return self._per_gate

def gradient_shifts(eigenvalues, differentiator):
    """(shifts [N, G], coefficients [N, G]) for gates with these generator
    eigenvalues: d f / d a_g = sum_n coefficients[n, g] f(a + shifts[n])."""
    rules = []
    for eigs in eigenvalues:
        if differentiator == "parameter_shift":
            rules.append(shift_rule(eigs))
        else:
            step = getattr(differentiator, "shift", None) or 0.01
            rules.append((np.array([step]), np.array([1.0 / (2.0 * step)])))
    num_sets = 2 * sum(len(s) for s, _ in rules)
    shifts = np.zeros((num_sets, len(rules)))
    coefficients = np.zeros((num_sets, len(rules)))
    row = 0
    for g, (gate_shifts, gate_coefficients) in enumerate(rules):
        for s, c in zip(gate_shifts, gate_coefficients):
            shifts[row:row + 2, g] = (s, -s)
            coefficients[row:row + 2, g] = (c, -c)
            row += 2
    return shifts, coefficients


def sampled_with_gradient(gate_angles, seed, sampled, exact_gradient, eigenvalues, differentiator, num_observables):
    """`sampled(gate_angles, seed)` [B, O], with the gradient `differentiator` estimates.

    Args:
      gate_angles: [B, G], one angle per gate (each gate reads its own slot).
      seed: int64 [2]; the forward pass and the gradient draw from two seeds split from it.
      sampled: (angles [N, G], seed) -> sampled expectations [N, O].
      exact_gradient: (angles, upstream [B, O]) -> d angles, the adjoint gradient of the exact values.
      eigenvalues: per gate, its generator's eigenvalues (the shift rule's frequencies).
      differentiator: "parameter_shift", "finite_difference" / `FiniteDifference(step)` or "adjoint".

    All shifted angle sets of the batch go to `sampled` in one call.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    forward_seed, gradient_seed = seeds[0], seeds[1]
    if differentiator != "adjoint":
        shifts, coefficients = gradient_shifts(eigenvalues, differentiator)

    @tf.custom_gradient
    def run(gate_angles):
        outputs = sampled(gate_angles, forward_seed)

        def grad(upstream):
            upstream = tf.cast(upstream, gate_angles.dtype)
            if differentiator == "adjoint":
                return exact_gradient(gate_angles, upstream)
            num_sets, num_gates = shifts.shape
            if num_sets == 0:  # no gate depends on an angle
                return tf.zeros_like(gate_angles)
            shifted = gate_angles[None] + tf.constant(shifts[:, None, :], gate_angles.dtype)
            results = sampled(tf.reshape(shifted, [-1, num_gates]), gradient_seed)
            results = tf.reshape(results, [num_sets, -1, num_observables])
            return tf.einsum("nbo,bo,ng->bg", results, upstream, tf.constant(coefficients, gate_angles.dtype))

        return outputs, grad

    return run(gate_angles)


def shift_rule(eigenvalues):
    """The (generalized) parameter-shift rule of U(a) = sum_t exp(-i a e_t) P_t.

    Any expectation is then a trigonometric polynomial in `a` whose
    frequencies are the differences of the eigenvalues, so with R of them
    d f / d a = sum_m c_m [f(a + s_m) - f(a - s_m)] exactly (Wierichs et al.,
    "General parameter-shift rules for quantum gradients", 2022). Two
    eigenvalues (Pauli rotations, powers of X, CNOT, ...): one pair of shifts.

    Returns:
      `(shifts [R], coefficients [R])`.
    """
    eigs = np.unique(np.round(np.asarray(eigenvalues, dtype=np.float64), 10))
    diffs = np.unique(np.round(np.abs(eigs[:, None] - eigs[None, :])[np.triu_indices(len(eigs), 1)], 9))
    diffs = diffs[diffs > 1e-9]
    if diffs.size == 0:  # a global phase: no dependence
        return np.zeros(0), np.zeros(0)
    base = diffs.min()
    multiples = diffs / base
    if np.allclose(multiples, np.round(multiples), atol=1e-6):
        # Equidistant frequencies k * base, k = 1..R (gaps included): the shifts of Wierichs et al.
        count = int(round(multiples.max()))
        frequencies = base * np.arange(1, count + 1)
        shifts = (2 * np.arange(1, count + 1) - 1) * np.pi / (2 * count * base)
    else:
        frequencies = diffs
        shifts = np.arange(1, diffs.size + 1) * np.pi / (2 * diffs.size * diffs.max())
    # f(a + s) - f(a - s) = sum_k 2 sin(w_k s) g_k and f'(a) = sum_k w_k g_k.
    system = 2.0 * np.sin(np.outer(frequencies, shifts))
    if np.linalg.cond(system) > 1e8:
        raise ValueError(f"No stable parameter-shift rule for a gate with generator eigenvalues {list(eigs)}")
    return shifts, np.linalg.solve(system, frequencies)


def cirq_to_native_order(states, num_qubits):
    """Reorders state vectors [..., 2**n] from Cirq's order to this library's.

    Cirq (and TFQ) put qubit 0 in the most significant bit of the amplitude
    index; the native op puts it in the least significant bit. The map is its
    own inverse.
    """
    states = tf.convert_to_tensor(states)
    lead = tf.shape(states)[:-1]
    axes = tf.rank(states) - 1
    split = tf.reshape(states, tf.concat([lead, [2] * num_qubits], 0))
    perm = tf.concat([tf.range(axes), axes + tf.range(num_qubits - 1, -1, -1)], 0)
    return tf.reshape(tf.transpose(split, perm), tf.shape(states))


def compile_circuit(circuit, observables, symbols=None, qubits=None, max_fused_qubits=None, noise=None,
                    simulation="auto", trajectories=None):
    """Compiles `circuit` once; see `CompiledCircuit`."""
    return CompiledCircuit(circuit, observables, symbols, qubits, max_fused_qubits, noise, simulation, trajectories)
