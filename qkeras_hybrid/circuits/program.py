"""The numeric program the native op runs, and the gate fuser that builds it.

A circuit is first lowered to `Primitive`s (a constant unitary, or
exp(-i * angle * H) with H given by its eigenvalues and projectors), then
fused into blocks of at most 3 qubits, then flattened into the tensors that
`custom_ops/simulator/program.h` documents.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import sympy

BLOCK_META_WIDTH = 7
GATE_META_WIDTH = 4
DENSE, DIAGONAL, REAL_DENSE, REAL_DIAGONAL = 0, 1, 2, 3
CONSTANT, EXPONENTIAL = 0, 1
MAX_GATE_QUBITS = 3
# From this many qubits on, neighbouring gates are fused into 2-qubit blocks:
# the state is large enough that fewer passes over it beat the cost of
# building block matrices. Below it only runs on the same qubits are fused.
FUSE_TWO_QUBITS_FROM = 12


@dataclasses.dataclass
class Primitive:
    """One gate: U = matrix, or U(angle) = sum_t exp(-i angle eig_t) P_t.

    The first of `qubits` is the most significant bit of the matrix index.
    """

    qubits: Tuple[int, ...]
    matrix: Optional[np.ndarray] = None
    eigenvalues: Optional[np.ndarray] = None
    projectors: Optional[np.ndarray] = None  # [terms, dim, dim]
    angle: Optional[sympy.Expr] = None
    kraus: Optional[np.ndarray] = None  # [m, dim, dim]: the channel rho -> sum_k K_k rho K_k^dagger

    @property
    def is_channel(self):
        return self.kraus is not None

    @property
    def is_constant(self):
        return self.angle is None

    def is_diagonal(self):
        mats = [self.matrix] if self.is_constant else list(self.projectors)
        return all(np.allclose(m, np.diag(np.diag(m)), atol=1e-12) for m in mats)

    def is_real(self):
        """Whether the unitary is real at every angle (Ry, CNOT, ...)."""
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
        if target is not None:
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
    block_meta: np.ndarray  # int32 [NB, 7]
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
    if primitive.is_constant:
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
    expression is listed in `angle_exprs`.
    """
    symbols = list(symbols)
    slot_of = {s: i for i, s in enumerate(symbols)}
    if max_fused_qubits is None:
        max_fused_qubits = 2 if num_qubits >= FUSE_TWO_QUBITS_FROM else 1
    if max_fused_qubits not in (1, 2, 3):
        raise ValueError(f"max_fused_qubits must be 1, 2 or 3 (the op's block sizes), got {max_fused_qubits!r}")
    blocks = fuse(primitives, max_fused_qubits)
    block_rows, gate_rows, data, angle_exprs = [], [], [], []
    offset = 0
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
        for g in block.gates:
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
            if kind_tag == "c":
                flat = _complex_to_flat(np.asarray(item, dtype=complex))
                gate_rows.append([CONSTANT, -1, offset, 1])
            else:
                parts = []
                for eig, proj in zip(item.eigenvalues, item.projectors):
                    parts.append(np.array([eig]))
                    parts.append(_complex_to_flat(embed(proj, item.qubits, bq)))
                flat = np.concatenate(parts)
                slot = slot_of.get(item.angle)
                if slot is None:
                    slot = len(symbols) + len(angle_exprs)
                    angle_exprs.append(item.angle)
                gate_rows.append([EXPONENTIAL, slot, offset, len(item.eigenvalues)])
            data.append(flat)
            offset += flat.size
        padded = bq + [0] * (3 - len(bq))
        block_rows.append([len(bq)] + padded + [kind, first, len(gate_rows) - first])
        assert dim == 2 ** len(bq)
    num_terms = max([len(o) for o in observables] + [1])
    masks = np.zeros((len(observables), num_terms, 2), dtype=np.int64)
    coeffs = np.zeros((len(observables), num_terms), dtype=np.float64)
    for o, terms in enumerate(observables):
        for t, (c, xm, zm) in enumerate(terms):
            masks[o, t] = (xm, zm)
            coeffs[o, t] = c
    return ProgramTensors(
        num_qubits=np.array(num_qubits, dtype=np.int32),
        block_meta=np.array(block_rows, dtype=np.int32).reshape(-1, BLOCK_META_WIDTH),
        gate_meta=np.array(gate_rows, dtype=np.int32).reshape(-1, GATE_META_WIDTH),
        gate_data=np.concatenate(data) if data else np.zeros(0),
        pauli_masks=masks,
        pauli_coeffs=coeffs,
        angle_exprs=angle_exprs,
    )
