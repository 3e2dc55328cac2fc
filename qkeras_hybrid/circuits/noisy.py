"""Noisy circuits on the native engine: exact density matrices and trajectories.

A `NoisyProgram` runs a circuit whose lowered primitives contain channels
(`Primitive.is_channel`) or whose measurements have readout errors:

- `"density_matrix"`: rho on n qubits is a vector on 2n qubits; every gate U
  becomes U on the row qubits and conj(U) on the column qubits, every channel
  one superoperator block (`program.density_primitives`). Exact values,
  exact adjoint gradients, probabilities, samples.
- `"trajectories"`: each channel picks one Kraus operator per trajectory,
  with a probability fixed in advance and the operator rescaled so that the
  average over picks is the channel (`program.trajectory_primitives`). Each
  trajectory is then an ordinary (non-unitary) state-vector run, whose
  `<psi|O|psi>` is an unbiased estimate of tr(O rho), and whose adjoint
  gradient an unbiased estimate of its gradient. Probabilities are the mean
  of |psi_t|^2 the same way (unbiased, with adjoint gradients). Samples come
  from quantum-jump trajectories instead (`trajectory_primitives(...,
  jumps=True)`: normalized states, so a shot of a random trajectory is
  exactly a draw from diag(rho)). Picks are drawn by stateless TF random ops
  from a seed the layer advances.
- `"auto"`: the density matrix up to `AUTO_DENSITY_MAX_QUBITS` qubits (a
  2n-qubit vector: 128 MiB per batch row in float32 at 12 qubits), then
  trajectories.
"""

import dataclasses

import numpy as np
import sympy
import tensorflow as tf

from qkeras_hybrid.circuits.angles import AngleMap
from qkeras_hybrid.circuits import program as program_lib
from qkeras_hybrid.circuits.program import build_program

SIMULATIONS = ("auto", "density_matrix", "trajectories")
AUTO_DENSITY_MAX_QUBITS = 12
DEFAULT_TRAJECTORIES = 100


def _density_ops():
    from qkeras_hybrid.ops import density  # registers the gradients

    return density


def check_simulation(simulation, trajectories, where):
    """(simulation, trajectories) validated: a name of SIMULATIONS and a positive int or None."""
    if simulation not in SIMULATIONS:
        raise ValueError(f"{where}: simulation must be one of {SIMULATIONS}, got {simulation!r}")
    if trajectories is not None and (isinstance(trajectories, bool) or not isinstance(trajectories, (int, np.integer))
                                     or trajectories < 1):
        raise ValueError(f"{where}: trajectories must be None (default {DEFAULT_TRAJECTORIES}) or a positive "
                         f"integer, got {trajectories!r}")
    return simulation, None if trajectories is None else int(trajectories)


def resolve_simulation(simulation, num_qubits):
    if simulation == "auto":
        return "density_matrix" if num_qubits <= AUTO_DENSITY_MAX_QUBITS else "trajectories"
    return simulation


def check_density_memory(noisy, where):
    """ValueError when `noisy` (a `NoisyProgram` or None) holds a density matrix too large to simulate here.

    rho on n qubits is a vector on 2n qubits, which the native op refuses at
    run time past its memory limit; layers call this when constructed, with
    the limit they apply to state vectors (`backends._validation`).
    """
    if noisy is None or noisy.simulation != "density_matrix":
        return
    from qkeras_hybrid.backends import _validation  # not at import: the backends import this module

    memory = _validation.physical_memory_bytes()
    limit = _validation.max_qubits("native", memory)
    n = noisy.num_qubits
    if limit is None or 2 * n <= limit:
        return
    per_amplitude = _validation.BYTES_PER_AMPLITUDE["native"]
    raise ValueError(
        f"{where}: simulation='density_matrix' on {n} qubits simulates rho as a vector on {2 * n} qubits: about "
        f"{_validation._gib(per_amplitude * 2.0 ** (2 * n))} of state vectors ({per_amplitude} bytes per amplitude), "
        f"more than the {_validation._gib(_validation.MEMORY_FRACTION * memory)} the native simulator may use "
        f"({_validation.MEMORY_FRACTION:.0%} of this machine's {_validation._gib(memory)}); at most {limit // 2} "
        f"qubits fit as a density matrix. Use simulation='trajectories' (or 'auto', which switches to them above "
        f"{AUTO_DENSITY_MAX_QUBITS} qubits)."
    )


def confuse(probabilities, readout, qubit_indices):
    """Probabilities [B, 2**k] (first measured qubit most significant) seen through
    per-qubit readout errors: P(read j) = sum_i A[j, i] P(i), A_q = [[1-p01, p10], [p01, 1-p10]]."""
    k = len(qubit_indices)
    dtype = probabilities.dtype
    shape = tf.concat([[-1], [2] * k], axis=0)
    p = tf.reshape(probabilities, shape)
    letters = "abcdefghijklmnopqrstuvwxyz"[:k]
    for j, q in enumerate(qubit_indices):
        p01, p10 = readout[q]
        if p01 == 0 and p10 == 0:
            continue
        matrix = tf.constant([[1 - p01, p10], [p01, 1 - p10]], dtype)
        out = letters[:j] + "Y" + letters[j + 1:]
        p = tf.einsum(f"Y{letters[j]},Z{letters}->Z{out}", matrix, p)
    return tf.reshape(p, tf.shape(probabilities))


def flip_readout(bits, readout, qubit_indices, seed):
    """Samples [B, shots, k] (bit j = register qubit qubit_indices[j]) with each bit flipped
    by its qubit's readout error: 0 -> 1 with probability readout[q, 0], 1 -> 0 with readout[q, 1]."""
    rates = np.asarray(readout, np.float64)[list(qubit_indices)]
    if not rates.any():
        return bits
    flip = tf.where(bits == 0, tf.constant(rates[:, 0]), tf.constant(rates[:, 1]))
    draws = tf.random.stateless_uniform(tf.shape(bits), tf.cast(seed, tf.int64), dtype=tf.float64)
    return tf.bitwise.bitwise_xor(bits, tf.cast(draws < flip, bits.dtype))


class _TrajectoryProgram:
    """A pure program whose channels are Kraus selections (or quantum jumps), and the picks it reads.

    Args:
      primitives, num_qubits, terms, symbols: as `NoisyProgram` takes them.
      jumps: as `program.trajectory_primitives` takes it.
    """

    def __init__(self, primitives, num_qubits, terms, symbols, jumps):
        selected = program_lib.trajectory_primitives(primitives, jumps=jumps)
        self.choices = program_lib.trajectory_choices(selected)
        self.num_symbols = len(symbols)
        self.program = build_program(num_qubits, selected, terms, list(symbols) + [c.symbol for c in self.choices])
        self.angle_map = AngleMap(self.program.angle_exprs, symbols)
        with tf.init_scope():
            self.inputs = tuple(tf.constant(a) for a in self.program.as_tuple())

    def angles(self, values, copies, seed):
        """Angles [copies * B, S + C + E]: row t * B + b is trajectory t of batch row b, with
        each channel's pick in the slots after the symbols' (`build_program`'s order)."""
        angles = self.angle_map(values)
        tiled = tf.tile(angles, [copies, 1]) if copies > 1 else angles
        if not self.choices:
            return tiled
        if seed is None:
            raise ValueError("Trajectories need a seed (an int64 [2] tensor)")
        picks = _density_ops().sample_kraus_choices(self.choices, tf.shape(tiled)[0], tf.cast(seed, tf.int64),
                                                    angles.dtype)
        num_symbols = self.num_symbols
        return tf.concat([tiled[:, :num_symbols], tf.stop_gradient(picks), tiled[:, num_symbols:]], axis=1)


class NoisyProgram:
    """The density-matrix or trajectory program of a noisy circuit.

    Args:
      primitives: the circuit's lowered primitives (angles bound to `symbols`),
        channels included.
      num_qubits: n, the register size.
      terms: per observable, a list of (coeff, x_mask, z_mask).
      symbols: the symbols whose values the caller feeds.
      readout: float64 [n, 2] readout flip probabilities, or None.
      simulation, trajectories: see `CompiledCircuit`.
    """

    def __init__(self, primitives, num_qubits, terms, symbols, readout, simulation, trajectories):
        self.num_qubits = num_qubits
        self.symbols = list(symbols)
        self.simulation = resolve_simulation(simulation, num_qubits)
        self.trajectories = trajectories or DEFAULT_TRAJECTORIES
        self.readout = np.zeros((num_qubits, 2)) if readout is None else np.asarray(readout, np.float64)
        self.num_observables = len(terms)
        self._primitives = list(primitives)
        self._terms = terms
        if self.simulation == "density_matrix":
            program = build_program(2 * num_qubits, program_lib.density_primitives(self._primitives, num_qubits),
                                    terms, self.symbols)
            self.angle_map = AngleMap(program.angle_exprs, self.symbols)
            with tf.init_scope():
                self.program_inputs = tuple(tf.constant(a) for a in program.as_tuple())
        else:
            self._trajectory = _TrajectoryProgram(self._primitives, num_qubits, terms, self.symbols, jumps=False)
            program, self.angle_map = self._trajectory.program, self._trajectory.angle_map
            self.program_inputs = self._trajectory.inputs
            self._jumps = None  # the quantum-jump program, built for the first samples
        self.program = program
        with tf.init_scope():
            self._readout = tf.constant(self.readout)
        self._per_gate = None

    @property
    def needs_seed(self):
        """Whether exact expectations draw random numbers (trajectories)."""
        return self.simulation == "trajectories"

    def _copies(self, wanted):
        """Trajectories to run per batch row: without channels (readout errors only) they are all one."""
        return wanted if self._trajectory.choices else 1

    def _jump_program(self):
        """The trajectory program for shots: channels that are not mixed-unitary become quantum
        jumps (normalized states, so each shot is a draw from rho); the same program if none is."""
        if self._jumps is None:
            if all(c.unitary for c in self._trajectory.choices):
                self._jumps = self._trajectory
            else:
                self._jumps = _TrajectoryProgram(self._primitives, self.num_qubits, self._terms, self.symbols,
                                                 jumps=True)
        return self._jumps

    def _require_density(self, what):
        if self.simulation != "density_matrix":
            raise NotImplementedError(
                f"{what} of a noisy circuit need simulation='density_matrix' (this one runs trajectories: "
                f"{self.num_qubits} qubits, simulation='auto' switches at {AUTO_DENSITY_MAX_QUBITS})")

    # --- exact values -------------------------------------------------------------------------------------

    def expectation(self, values, seed=None):
        """tr(O_o rho) [B, O] (density matrix), or its trajectory estimate; differentiable."""
        if self.simulation == "density_matrix":
            return _density_ops().density_expectation(*self.program_inputs, self.angle_map(values))
        from qkeras_hybrid import ops

        copies = self._copies(self.trajectories)
        outputs = ops.expectation(*self.program_inputs, self._trajectory.angles(values, copies, seed))
        return tf.reduce_mean(tf.reshape(outputs, [copies, -1, self.num_observables]), axis=0)

    def probabilities(self, values, qubit_indices, seed=None):
        """Marginal probabilities [B, 2**k] with readout errors; differentiable.

        Exact from the density matrix; with trajectories, the mean of |psi_t|^2
        over them (fixed-probability Kraus picks drawn from `seed`, so each
        trajectory's values and adjoint gradient are unbiased, as `expectation`'s).
        """
        if self.simulation == "density_matrix":
            p = _density_ops().density_probabilities(*self.program_inputs, self.angle_map(values), qubit_indices)
            return confuse(p, self.readout, qubit_indices)
        from qkeras_hybrid.ops import measure

        copies = self._copies(self.trajectories)
        p = measure.probabilities(self.program_inputs, self._trajectory.angles(values, copies, seed), qubit_indices)
        p = tf.reduce_mean(tf.reshape(p, [copies, -1, 2 ** len(qubit_indices)]), axis=0)
        return confuse(p, self.readout, qubit_indices)

    # --- sampled values -----------------------------------------------------------------------------------

    def sample(self, values, qubit_indices, shots, seed):
        """int32 [B, shots, k] measured bits, readout errors included; no gradient.

        With trajectories, shots come from min(shots, trajectories) quantum-jump
        trajectories per batch row, ceil(shots / that) from each: shot s is draw
        s // T of trajectory s % T. Each trajectory is a normalized state drawn
        so that the mixture of them is rho, so every shot is exactly a draw from
        rho's distribution (unbiased frequencies); shots of one trajectory are
        correlated, so with shots > trajectories frequencies spread more than
        multinomially (independent shots: trajectories >= shots).
        """
        if self.simulation == "density_matrix":
            angles = tf.stop_gradient(self.angle_map(values))
            return _density_ops().density_sample(*self.program_inputs, angles, qubit_indices, shots, seed,
                                                 self._readout)
        from qkeras_hybrid.ops import measure

        if seed is None:
            raise ValueError("Samples need a seed (an int64 [2] tensor)")
        picks_seed, shots_seed, readout_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3))
        program = self._jump_program()
        copies = self._copies(min(shots, self.trajectories))
        per_copy = -(-shots // copies)
        angles = tf.stop_gradient(program.angles(values, copies, picks_seed))
        bits = measure.sample(program.inputs, angles, qubit_indices, per_copy, shots_seed)
        k = len(qubit_indices)
        # [copies * B, per_copy, k] -> [B, per_copy * copies, k]: shot j * copies + t is draw j of trajectory t.
        bits = tf.transpose(tf.reshape(bits, [copies, -1, per_copy, k]), [1, 2, 0, 3])
        bits = tf.reshape(bits, [-1, per_copy * copies, k])[:, :shots]
        return flip_readout(bits, self.readout, qubit_indices, readout_seed)

    def sampled_expectation(self, values, shots, seed, differentiator):
        """Sampled <O_o> [B, O] (readout errors included), with the gradient `differentiator` estimates."""
        from qkeras_hybrid.circuits.compiled import sampled_with_gradient

        self._require_density("Sampled expectations")
        program, eigenvalues = self._per_gate_program()
        if eigenvalues:
            gate_angles = self._gate_angle_map._extra(values)
        else:
            gate_angles = tf.zeros([tf.shape(values)[0], 0], values.dtype)
        density = _density_ops()

        def sampled(angles, seed):
            return density.density_sampled_expectation(*program, angles, shots, seed, self._readout)

        def exact_gradient(angles, upstream):
            with tf.GradientTape() as tape:
                tape.watch(angles)
                outputs = density.density_expectation(*program, angles)
            return tape.gradient(outputs, angles, output_gradients=upstream)

        return sampled_with_gradient(gate_angles, seed, sampled, exact_gradient, eigenvalues, differentiator,
                                     self.num_observables)

    def _per_gate_program(self):
        """(program tensors, eigenvalues of each gate's generator) with every gate of the circuit reading its own slot.

        Built from the primitives, before the density doubling, so that a gate's
        two copies (U and conj(U)) keep sharing their slot: a shift moves both.
        """
        if self._per_gate is None:
            primitives, exprs, eigenvalues = [], [], []
            for p in self._primitives:
                if p.is_channel or p.is_constant:
                    primitives.append(p)
                    continue
                symbol = sympy.Symbol(f"_gate_{len(exprs)}")
                exprs.append(p.angle)
                eigenvalues.append(np.asarray(p.eigenvalues))
                primitives.append(dataclasses.replace(p, angle=symbol))
            symbols = [sympy.Symbol(f"_gate_{i}") for i in range(len(exprs))]
            program = build_program(2 * self.num_qubits, program_lib.density_primitives(primitives, self.num_qubits),
                                    self._terms, symbols)
            assert not program.angle_exprs
            # Each gate's angle from the symbol values: the slots of a map over these expressions.
            self._gate_angle_map = AngleMap(exprs, self.symbols) if exprs else None
            with tf.init_scope():
                tensors = tuple(tf.constant(a) for a in program.as_tuple())
            self._per_gate = (tensors, eigenvalues)
        return self._per_gate
