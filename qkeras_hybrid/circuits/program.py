"""The numeric program the native op runs, and the gate fuser that builds it.

A circuit is first lowered to `Primitive`s (a constant unitary, or
exp(-i * angle * H) with H given by its eigenvalues and projectors, or a
noise channel given by its Kraus operators), then fused into blocks of at
most 3 qubits, then flattened into the tensors that
`custom_ops/simulator/program.h` documents.

Noisy circuits run two ways:

* exactly, as density matrices: `density_primitives` rewrites the circuit
  for vec(rho) on a doubled register (the `ops.density` ops run it);
* by trajectories: `trajectory_primitives` replaces each channel by a Kraus
  selection, a block whose matrix is chosen per batch row by an angle slot
  (the ordinary ops run it; `trajectory_choices` says how to draw them).
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import sympy

BLOCK_META_WIDTH = 7
# A density program with a 4-qubit block (a 2-qubit channel's superoperator)
# has an 8th column: that block's fourth qubit.
DENSITY_BLOCK_META_WIDTH = 8
GATE_META_WIDTH = 4
DENSE, DIAGONAL, REAL_DENSE, REAL_DIAGONAL = 0, 1, 2, 3
CONSTANT, EXPONENTIAL, SELECTION, NONUNITARY_SELECTION, SUPEROPERATOR, JUMP_SELECTION = 0, 1, 2, 3, 4, 5
MAX_GATE_QUBITS = 3
MAX_CHANNEL_QUBITS = 2
# A superoperator's inverse goes into the program when it is at least this
# well conditioned; the op decides whether to use it (see program.h).
MAX_INVERSE_CONDITION = 1e6
# From this many qubits on, neighbouring gates are fused into 2-qubit blocks:
# the state is large enough that fewer passes over it beat the cost of
# building block matrices. Below it only runs on the same qubits are fused.
FUSE_TWO_QUBITS_FROM = 12


@dataclasses.dataclass
class Primitive:
    """One gate: U = matrix, or U(angle) = sum_t exp(-i angle eig_t) P_t;
    or a channel; or one of the non-unitary blocks made from channels.

    The first of `qubits` is the most significant bit of the matrix index.

    * A channel (`is_channel`): `kraus` [m, d, d], matrix and angle None:
      rho -> sum_k K_k rho K_k^dagger on 1 or 2 qubits. Never fused.
    * A Kraus selection (`is_selection`, made by `trajectory_primitives`):
      `kraus` [m, d, d] and `angle` a symbol whose value k in [0, m) selects
      the matrix applied, per batch row; `probabilities` [m]: the chances
      with which k is to be drawn. With `jump=True`, a quantum-jump
      selection: `kraus` are the channel's operators, and the angle's value
      u in [0, 1) picks one with the state-dependent probabilities
      ||K_k psi||^2 (no `probabilities`).
    * A superoperator (`superoperator=True`, made by `density_primitives`):
      the constant non-unitary `matrix` of a channel on the doubled register.
    """

    qubits: Tuple[int, ...]
    matrix: Optional[np.ndarray] = None
    eigenvalues: Optional[np.ndarray] = None
    projectors: Optional[np.ndarray] = None  # [terms, dim, dim]
    angle: Optional[sympy.Expr] = None
    kraus: Optional[np.ndarray] = None  # [m, dim, dim]: the channel rho -> sum_k K_k rho K_k^dagger
    probabilities: Optional[np.ndarray] = None  # [m], of a selection
    superoperator: bool = False
    jump: bool = False

    def __post_init__(self):
        if self.kraus is None:
            return
        kraus = np.asarray(self.kraus, dtype=np.complex128)
        dim = 2 ** len(self.qubits)
        if kraus.ndim != 3 or kraus.shape[1:] != (dim, dim) or kraus.shape[0] < 1:
            raise ValueError(
                f"kraus must have shape [m, {dim}, {dim}] (m >= 1 Kraus operators on "
                f"{len(self.qubits)} qubits), got {kraus.shape}")
        if not np.all(np.isfinite(kraus)):
            raise ValueError("kraus holds non-finite values")
        self.kraus = kraus

    @property
    def is_channel(self):
        return self.kraus is not None and self.angle is None

    @property
    def is_selection(self):
        return self.kraus is not None and self.angle is not None

    @property
    def is_constant(self):
        return self.angle is None

    @property
    def fusable(self):
        """Whether the fuser may merge it with neighbouring gates (unitaries only)."""
        return self.kraus is None and not self.superoperator

    def _matrices(self):
        if self.kraus is not None:
            return list(self.kraus)
        return [self.matrix] if self.is_constant else list(self.projectors)

    def is_diagonal(self):
        return all(np.allclose(m, np.diag(np.diag(m)), atol=1e-12) for m in self._matrices())

    def is_real(self):
        """Whether the unitary is real at every angle (Ry, CNOT, ...)."""
        if self.kraus is not None:
            return bool(np.all(np.abs(self.kraus.imag) < 1e-14))
        if self.is_constant:
            return bool(np.all(np.abs(self.matrix.imag) < 1e-14))
        angles = np.random.default_rng(0).uniform(-7, 7, size=5)
        return all(np.all(np.abs(self.unitary_at(a).imag) < 1e-12) for a in angles)

    def unitary_at(self, angle):
        if self.is_constant:
            return self.matrix
        phases = np.exp(-1j * angle * self.eigenvalues)
        return np.einsum("t,tij->ij", phases, self.projectors)


def exponential(qubits, generator, angle):
    """exp(-i * angle * generator) for a Hermitian constant generator."""
    generator = np.asarray(generator, dtype=complex)
    eigs, vecs = np.linalg.eigh(generator)
    distinct = []
    for e in eigs:
        if not any(abs(e - d) < 1e-9 for d in distinct):
            distinct.append(e)
    projectors = []
    for d in distinct:
        cols = vecs[:, np.abs(eigs - d) < 1e-9]
        projectors.append(cols @ cols.conj().T)
    return Primitive(
        qubits=tuple(qubits),
        eigenvalues=np.array(distinct, dtype=float),
        projectors=np.array(projectors),
        angle=sympy.sympify(angle),
    )


def embed(matrix, gate_qubits, block_qubits):
    """`matrix` on gate_qubits as a matrix on block_qubits (identity elsewhere)."""
    gate_qubits = list(gate_qubits)
    if gate_qubits == list(block_qubits):
        return matrix
    extra = [q for q in block_qubits if q not in gate_qubits]
    full = np.kron(matrix, np.eye(2 ** len(extra)))
    order = gate_qubits + extra
    perm = [order.index(q) for q in block_qubits]
    k = len(block_qubits)
    t = full.reshape([2] * (2 * k)).transpose(perm + [k + p for p in perm])
    return t.reshape(2**k, 2**k)


@dataclasses.dataclass
class _Block:
    qubits: List[int]
    gates: List[Primitive]


def fuse(primitives: Sequence[Primitive], max_fused_qubits: int) -> List[_Block]:
    """Greedy fusion: a gate joins the latest block touching its qubits when
    no later block touches them and the union stays small enough."""
    blocks: List[_Block] = []
    last = {}  # qubit -> index of the latest block acting on it
    for gate in primitives:
        touching = [last[q] for q in gate.qubits if q in last]
        target = max(touching) if touching else None
        # Channels and the blocks made of them stand alone.
        if target is not None and gate.fusable and blocks[target].gates[0].fusable:
            block = blocks[target]
            union = set(block.qubits) | set(gate.qubits)
            same = union == set(block.qubits) and len(union) == len(gate.qubits)
            if len(union) <= max_fused_qubits or same:
                block.qubits += [q for q in gate.qubits if q not in block.qubits]
                block.gates.append(gate)
                for q in gate.qubits:
                    last[q] = target
                continue
        blocks.append(_Block(qubits=list(gate.qubits), gates=[gate]))
        for q in gate.qubits:
            last[q] = len(blocks) - 1
    return blocks


@dataclasses.dataclass
class ProgramTensors:
    """The op's program inputs as numpy arrays, plus the angle expressions."""

    num_qubits: np.ndarray  # int32 scalar
    block_meta: np.ndarray  # int32 [NB, 7], or [NB, 8] for a density program with a 4-qubit block
    gate_meta: np.ndarray  # int32 [NG, 4]
    gate_data: np.ndarray  # float64 [D]
    pauli_masks: np.ndarray  # int64 [O, T, 2]
    pauli_coeffs: np.ndarray  # float64 [O, T]
    angle_exprs: List[sympy.Expr]  # of the slots after the symbols' own

    def as_tuple(self):
        return (
            self.num_qubits,
            self.block_meta,
            self.gate_meta,
            self.gate_data,
            self.pauli_masks,
            self.pauli_coeffs,
        )


def _complex_to_flat(m):
    return np.stack([m.real, m.imag], axis=-1).reshape(-1)


def bind_angle(primitive, symbols):
    """Rewrites a primitive so that the op reads a symbol's value directly.

    exp(-i (c s + d) H) becomes the constant exp(-i d H) then exp(-i s (c H)):
    the angle slot is then the symbol s itself. Other expressions (several
    symbols, sin(s), ...) keep their expression and get slots of their own.
    """
    if primitive.is_constant or primitive.kraus is not None:
        return [primitive]
    expr = primitive.angle
    if not expr.free_symbols:
        return [Primitive(qubits=primitive.qubits, matrix=primitive.unitary_at(float(expr)))]
    if len(expr.free_symbols) == 1:
        (symbol,) = expr.free_symbols
        scale = sympy.diff(expr, symbol)
        if symbol in symbols and not scale.free_symbols:
            out = []
            offset = float(expr.subs(symbol, 0))
            if offset != 0.0:
                out.append(Primitive(qubits=primitive.qubits, matrix=primitive.unitary_at(offset)))
            out.append(
                dataclasses.replace(primitive, eigenvalues=primitive.eigenvalues * float(scale), angle=symbol)
            )
            return out
    return [primitive]


def build_program(num_qubits, primitives, observables, symbols=(), max_fused_qubits=None):
    """Fuses `primitives` and flattens them with `observables`.

    observables: per observable, a list of (coeff, x_mask, z_mask).
    Angle slots: slot i < len(symbols) is symbols[i]'s value; an exponential
    whose angle is another expression gets a slot after those, and that
    expression is listed in `angle_exprs`. A Kraus selection reads its
    symbol's slot (list the symbols of `trajectory_choices` in `symbols`).

    Channels must first be rewritten by `density_primitives` (a density
    program, for the `ops.density` ops: block_meta gets an 8th column when a
    2-qubit channel makes a 4-qubit block) or `trajectory_primitives`.
    """
    symbols = list(symbols)
    slot_of = {s: i for i, s in enumerate(symbols)}
    if max_fused_qubits is None:
        max_fused_qubits = 2 if num_qubits >= FUSE_TWO_QUBITS_FROM else 1
    if max_fused_qubits not in (1, 2, 3):
        raise ValueError(f"max_fused_qubits must be 1, 2 or 3 (the op's block sizes), got {max_fused_qubits!r}")
    for p in primitives:
        if p.is_channel:
            raise ValueError(
                f"A channel on qubits {p.qubits} cannot run as a gate: rewrite the program with "
                "density_primitives (exact density matrices) or trajectory_primitives (trajectories)")
    blocks = fuse(primitives, max_fused_qubits)
    block_rows, gate_rows, data, angle_exprs = [], [], [], []
    offset = 0

    def slot_for(angle):
        slot = slot_of.get(angle)
        if slot is None:
            slot = len(symbols) + len(angle_exprs)
            angle_exprs.append(angle)
        return slot

    for block in blocks:
        bq = block.qubits
        dim = 2 ** len(bq)
        if all(g.is_diagonal() for g in block.gates):
            kind = REAL_DIAGONAL if all(g.is_real() for g in block.gates) else DIAGONAL
        elif all(g.is_real() for g in block.gates):
            kind = REAL_DENSE  # the op skips the imaginary parts of its matrix
        else:
            kind = DENSE
        first = len(gate_rows)
        pending = None  # a product of consecutive constant gates
        entries = []
        head = block.gates[0]
        if head.superoperator:
            flat = [_complex_to_flat(np.asarray(head.matrix, dtype=complex))]
            inverse = _stable_inverse(head.matrix)
            if inverse is not None:
                flat.append(_complex_to_flat(inverse))
            gate_rows.append([SUPEROPERATOR, -1, offset, len(flat)])
            entries = [("raw", np.concatenate(flat))]
        elif head.is_selection:
            unitary = all(np.allclose(k.conj().T @ k, np.eye(dim), atol=1e-10) for k in head.kraus)
            gate_type = JUMP_SELECTION if head.jump else SELECTION if unitary else NONUNITARY_SELECTION
            gate_rows.append([gate_type, slot_for(head.angle), offset, len(head.kraus)])
            entries = [("raw", np.concatenate([_complex_to_flat(k) for k in head.kraus]))]
        for g in block.gates if head.fusable else ():
            if g.is_constant:
                m = embed(g.matrix, g.qubits, bq)
                pending = m if pending is None else m @ pending
                continue
            if pending is not None:
                entries.append(("c", pending))
                pending = None
            entries.append(("e", g))
        if pending is not None:
            entries.append(("c", pending))
        for kind_tag, item in entries:
            if kind_tag == "raw":  # its gate row is written
                flat = item
            elif kind_tag == "c":
                flat = _complex_to_flat(np.asarray(item, dtype=complex))
                gate_rows.append([CONSTANT, -1, offset, 1])
            else:
                parts = []
                for eig, proj in zip(item.eigenvalues, item.projectors):
                    parts.append(np.array([eig]))
                    parts.append(_complex_to_flat(embed(proj, item.qubits, bq)))
                flat = np.concatenate(parts)
                gate_rows.append([EXPONENTIAL, slot_for(item.angle), offset, len(item.eigenvalues)])
            data.append(flat)
            offset += flat.size
        padded = bq[:3] + [0] * (3 - len(bq[:3]))
        block_rows.append([len(bq)] + padded + [kind, first, len(gate_rows) - first] + bq[3:4])
        assert dim == 2 ** len(bq)
    width = DENSITY_BLOCK_META_WIDTH if any(len(r) > BLOCK_META_WIDTH for r in block_rows) else BLOCK_META_WIDTH
    block_rows = [r + [0] * (width - len(r)) for r in block_rows]
    num_terms = max([len(o) for o in observables] + [1])
    masks = np.zeros((len(observables), num_terms, 2), dtype=np.int64)
    coeffs = np.zeros((len(observables), num_terms), dtype=np.float64)
    for o, terms in enumerate(observables):
        for t, (c, xm, zm) in enumerate(terms):
            masks[o, t] = (xm, zm)
            coeffs[o, t] = c
    return ProgramTensors(
        num_qubits=np.array(num_qubits, dtype=np.int32),
        block_meta=np.array(block_rows, dtype=np.int32).reshape(-1, width),
        gate_meta=np.array(gate_rows, dtype=np.int32).reshape(-1, GATE_META_WIDTH),
        gate_data=np.concatenate(data) if data else np.zeros(0),
        pauli_masks=masks,
        pauli_coeffs=coeffs,
        angle_exprs=angle_exprs,
    )


def _stable_inverse(matrix):
    """The inverse of a superoperator, or None when it is too ill-conditioned
    (the op then restores the state from a checkpoint)."""
    if np.linalg.cond(matrix) > MAX_INVERSE_CONDITION:
        return None
    return np.linalg.inv(matrix)


def superoperator(kraus):
    """S = sum_k kron(K_k, conj(K_k)): the channel on vec(rho) with the row
    qubits first (most significant) and the column qubits after them."""
    kraus = np.asarray(kraus, dtype=complex)
    return np.einsum("kij,kab->iajb", kraus, kraus.conj()).reshape(kraus.shape[1] ** 2, -1)


def _conjugate(primitive, qubits):
    """conj(U) of a unitary primitive, on `qubits`: conj of the matrix, or of
    exp(-i a H) = exp(-i a (-conj(H))) (eigenvalues negated, projectors
    conjugated, the same angle)."""
    if primitive.is_constant:
        return Primitive(qubits=qubits, matrix=np.conj(primitive.matrix))
    return dataclasses.replace(primitive, qubits=qubits, eigenvalues=-np.asarray(primitive.eigenvalues),
                               projectors=np.conj(primitive.projectors))


def density_primitives(primitives, num_qubits):
    """The circuit as a density program on 2 * num_qubits qubits.

    rho on n = num_qubits qubits is the vector vec(rho)[r + (c << n)] =
    rho[r, c]: row qubit q is register qubit q, column qubit q is q + n. A
    unitary U on qubits Q acts as U on Q and conj(U) on Q + n (two gates,
    which the fuser combines with their neighbours: measured faster than one
    gate U (x) conj(U) on (q, q + n), whose angle derivatives cost a 2-qubit
    block); a channel becomes its superoperator S = sum_k K_k (x) conj(K_k)
    on Q + (Q + n), a non-unitary block of 2 or 4 qubits.

    Build the program with `build_program(2 * num_qubits, ...)`, observables
    over the n physical qubits, and run it with the `ops.density` ops.

    Args:
      primitives: the circuit's primitives (unitaries and channels).
      num_qubits: n, the circuit's register size.

    Returns:
      A list of `Primitive`s on 2 * num_qubits qubits.
    """
    n = int(num_qubits)
    out = []
    for p in primitives:
        if p.is_selection or p.superoperator:
            raise ValueError("density_primitives takes a circuit's primitives (unitaries and channels), "
                             "not Kraus selections or superoperators")
        if any(not 0 <= q < n for q in p.qubits):
            raise ValueError(f"A primitive on qubits {p.qubits} is outside the {n}-qubit register")
        columns = tuple(q + n for q in p.qubits)
        if p.is_channel:
            if len(p.qubits) > MAX_CHANNEL_QUBITS:
                raise ValueError(f"Channels act on at most {MAX_CHANNEL_QUBITS} qubits, got one on {p.qubits}")
            out.append(Primitive(qubits=tuple(p.qubits) + columns, matrix=superoperator(p.kraus),
                                 superoperator=True))
        else:
            out.append(p)
            out.append(_conjugate(p, columns))
    return out


@dataclasses.dataclass
class KrausChoice:
    """How to draw one Kraus selection of a trajectory program.

    Attributes:
      symbol: the angle symbol whose value k (a float holding an integer in
        [0, len(probabilities))) selects the matrix the trajectory applies;
        for a quantum jump, a uniform u in [0, 1).
      probabilities: [m] the chances q_k with which to draw k (None for a
        quantum jump: the op draws k from the state with u).
      unitary: whether every selected matrix is unitary (mixed-unitary
        channels such as depolarizing noise and Pauli flips): the adjoint
        pass then needs no checkpoint of the state.
      jump: whether it is a quantum-jump selection.
    """

    symbol: sympy.Symbol
    probabilities: Optional[np.ndarray]
    unitary: bool
    jump: bool = False


def trajectory_primitives(primitives, symbol_prefix="_kraus_choice_", jumps=False):
    """The circuit with each channel replaced by a Kraus selection.

    A channel with Kraus operators K_k on d = 2^k dimensions becomes the
    choice of K_k / sqrt(q_k) with q_k = tr(K_k^dagger K_k) / d (normalized
    to sum to 1; zero operators dropped), applied as a gate. Drawing k with
    probability q_k, independently of the angles, the expectation of the
    unnormalized final |psi><psi| is rho: each trajectory's <psi|O|psi> is
    an unbiased estimate of tr(O rho), and its adjoint gradient an unbiased
    estimate of the gradient. Mixed-unitary channels (depolarizing, Pauli
    flips) select unitaries: no checkpoints in the adjoint pass; others
    (damping, reset) do keep one per channel.

    The final states are not normalized, and that is what makes the
    estimates unbiased: expectations and probabilities (the `Probabilities`
    op) average to rho's. The shot-based ops (`Sample`,
    `SampledExpectation`) normalize each row's distribution, which biases
    them when a channel is not mixed-unitary (`KrausChoice.unitary` False).
    For them, `jumps=True` makes such channels quantum-jump selections
    (Monte-Carlo wave functions, as TFQ's noisy backend): the op draws k with
    probability ||K_k psi||^2 from the state psi reaching the channel and
    keeps psi's norm, so every trajectory is a normalized state and the
    samples of N trajectories are draws from rho. Such programs have no
    adjoint gradient (the choices depend on the state); parameter shifts of
    their sampled values are unbiased. Mixed-unitary channels stay Kraus
    selections either way (their choice does not depend on the state).

    Args:
      primitives: the circuit's primitives (unitaries and channels).
      symbol_prefix: the channels' symbols are named prefix + index, in
        circuit order; they must not clash with the circuit's own symbols.
      jumps: whether channels that are not mixed-unitary become
        quantum-jump selections (for shot-based read-outs), not Kraus
        selections.

    Returns:
      A list of `Primitive`s (see `trajectory_choices` for how to draw the
      selections' values).
    """
    out, index = [], 0
    for p in primitives:
        if not p.is_channel:
            out.append(p)
            continue
        kraus = p.kraus
        dim = kraus.shape[1]
        weights = np.einsum("kij,kij->k", kraus.conj(), kraus).real / dim
        keep = weights > 1e-15 * weights.max()
        kraus, weights = kraus[keep], weights[keep]
        probabilities = weights / weights.sum()
        symbol = sympy.Symbol(f"{symbol_prefix}{index}")
        scaled = kraus / np.sqrt(probabilities)[:, None, None]
        mixed_unitary = all(np.allclose(k.conj().T @ k, np.eye(dim), atol=1e-10) for k in scaled)
        if jumps and not mixed_unitary:
            out.append(Primitive(qubits=tuple(p.qubits), kraus=kraus, angle=symbol, jump=True))
        else:
            out.append(Primitive(qubits=tuple(p.qubits), kraus=scaled, angle=symbol, probabilities=probabilities))
        index += 1
    return out


def trajectory_choices(primitives):
    """The `KrausChoice` of each Kraus selection of a trajectory program, in
    order: pass their symbols to `build_program` after the circuit's, and feed
    each a value k drawn from its probabilities (a quantum jump: a uniform u
    in [0, 1)), per batch row (`ops.density.sample_kraus_choices` does it
    with TF's stateless random ops)."""
    choices = []
    for p in primitives:
        if p.is_selection:
            dim = p.kraus.shape[1]
            unitary = all(np.allclose(k.conj().T @ k, np.eye(dim), atol=1e-10) for k in p.kraus)
            probabilities = None if p.jump else np.asarray(p.probabilities)
            choices.append(KrausChoice(symbol=p.angle, probabilities=probabilities, unitary=unitary and not p.jump,
                                       jump=p.jump))
    return choices
