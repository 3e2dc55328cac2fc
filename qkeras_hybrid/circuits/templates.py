"""Circuit templates: data encodings and variational ansatze (VQNet 2.0 / QCCNN).

Every template returns a `Template(circuit, symbols)`: a `cirq.Circuit` with
sympy symbols, and the list of those symbols in the order a layer should feed
them (input columns for encodings, weights for ansatze). `Template` is a
named tuple, so `circuit, symbols = angle_embedding(4)` works, and two
templates add up: `(encoding + ansatz).circuit` is the concatenated circuit
and `.symbols` the concatenated symbol list.

Symbol names are deterministic: encodings use `{prefix}{i}` (`x0, x1, ...`),
ansatze `{prefix}_{layer}_{qubit}` (`w_0_1`) or, with several angles per
qubit, `{prefix}_{layer}_{qubit}_{k}` (`w_0_1_2`).

Qubits are given as an int `n` (meaning `cirq.LineQubit.range(n)`) or as a
sequence of Cirq qubits; the first qubit is the most significant bit of a
basis-state index, as in Cirq.
"""

import math
from typing import List, NamedTuple

import cirq
import numpy as np
import sympy

__all__ = [
    "Template",
    "amplitude_embedding",
    "angle_embedding",
    "basis_embedding",
    "hardware_efficient",
    "strongly_entangling",
]

# Regularizers of the amplitude-embedding angles, where a block of features
# can be all zero. Far below any feature scale of interest, yet chosen so that
# no intermediate of the float32 gradient at an all-zero block overflows
# (the largest is ~1/(_NORM_EPS * _SHIFT) times the upstream gradient) and the
# gradient there comes out as exactly 0 instead of NaN.
_NORM_EPS = 1e-24  # added under each sqrt of a sum of squares
_SHIFT = 1e-12  # sqrt(_NORM_EPS), keeps atan2 away from (0, 0)


class Template(NamedTuple):
    """A template circuit and its symbols, in the order they should be fed.

    Attributes:
      circuit: the `cirq.Circuit`.
      symbols: list of `sympy.Symbol`, inputs or weights in feeding order.

    `a + b` of two templates is the template of `a.circuit + b.circuit` with
    the symbols of `a` followed by those of `b`; it raises `ValueError` if
    they share a symbol name (give one of them another `prefix`).
    """

    circuit: cirq.Circuit
    symbols: List[sympy.Symbol]

    def __add__(self, other):
        if not isinstance(other, Template):
            raise TypeError(
                f"A Template adds to a Template only, got {type(other).__name__}; "
                "to append a circuit use template.circuit + circuit"
            )
        shared = sorted({str(s) for s in self.symbols} & {str(s) for s in other.symbols})
        if shared:
            raise ValueError(
                f"The templates share symbols {shared}; build one of them with another prefix"
            )
        return Template(self.circuit + other.circuit, list(self.symbols) + list(other.symbols))


def _qubit_list(qubits):
    if isinstance(qubits, (int, np.integer)) and not isinstance(qubits, bool):
        if qubits < 1:
            raise ValueError(f"qubits must be a positive number of qubits, got {qubits}")
        return cirq.LineQubit.range(int(qubits))
    try:
        qubits = list(qubits)
    except TypeError:
        raise TypeError(
            f"qubits must be an int or a sequence of cirq qubits, got {type(qubits).__name__}"
        ) from None
    if not qubits:
        raise ValueError("qubits is empty")
    for q in qubits:
        if not isinstance(q, cirq.Qid) or q.dimension != 2:
            raise TypeError(f"qubits must be cirq qubits (dimension 2), got {q!r}")
    if len(set(qubits)) != len(qubits):
        raise ValueError(f"qubits lists a qubit more than once: {qubits}")
    return qubits


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ encodings

_ROTATIONS = {"X": cirq.rx, "Y": cirq.ry, "Z": cirq.rz}


def angle_embedding(qubits, rotation="Y", prefix="x"):
    """Encodes one feature per qubit as a rotation angle.

    Qubit `i` gets `R(x_i)` with `R` one of `cirq.rx`, `cirq.ry`, `cirq.rz`
    (`exp(-i x_i P / 2)`), so from |0...0> and with `rotation="Y"`,
    `<Z_i> = cos(x_i)` and `<X_i> = sin(x_i)`. Scale the features in the
    model (e.g. by pi) if they should cover a full turn.

    Args:
      qubits: number of qubits `n` (`cirq.LineQubit.range(n)`) or a sequence
        of Cirq qubits.
      rotation: `"X"`, `"Y"` or `"Z"` (case-insensitive).
      prefix: symbol prefix; the symbols are `{prefix}0 ... {prefix}{n-1}`.

    Returns:
      `Template(circuit, symbols)`, symbols in qubit order.

    Example:

    >>> circuit, xs = angle_embedding(2, rotation="X")
    >>> xs
    [x0, x1]
    >>> print(circuit)
    0: ───Rx(x0)───
    <BLANKLINE>
    1: ───Rx(x1)───
    """
    qubits = _qubit_list(qubits)
    key = rotation.upper() if isinstance(rotation, str) else rotation
    if key not in _ROTATIONS:
        raise ValueError(f"rotation must be one of 'X', 'Y', 'Z', got {rotation!r}")
    gate = _ROTATIONS[key]
    symbols = [sympy.Symbol(f"{prefix}{i}") for i in range(len(qubits))]
    return Template(cirq.Circuit(gate(s)(q) for s, q in zip(symbols, qubits)), symbols)


def basis_embedding(qubits, prefix="b"):
    """Encodes a bit string as the computational basis state |b_0 b_1 ...>.

    Qubit `i` gets `X**b_i`: for `b_i` in {0, 1} the circuit prepares the
    basis state whose index has `b_0` as its most significant bit. The
    exponent is a symbol, so the circuit is defined (and differentiable, as
    the continuous gate `X**t`) for any real `b_i`; only 0 and 1 give a basis
    state.

    Args:
      qubits: number of qubits `n` or a sequence of Cirq qubits.
      prefix: symbol prefix; the symbols are `{prefix}0 ... {prefix}{n-1}`.

    Returns:
      `Template(circuit, symbols)`, symbols in qubit order.

    Example:

    >>> import cirq
    >>> circuit, bs = basis_embedding(3)
    >>> resolved = cirq.resolve_parameters(circuit, dict(zip(bs, [1, 0, 1])))
    >>> int(abs(cirq.final_state_vector(resolved)).argmax())  # 0b101
    5
    """
    qubits = _qubit_list(qubits)
    symbols = [sympy.Symbol(f"{prefix}{i}") for i in range(len(qubits))]
    return Template(cirq.Circuit((cirq.X**s)(q) for s, q in zip(symbols, qubits)), symbols)


def _is_number(expr):
    return not sympy.sympify(expr).free_symbols


def _number(expr):
    return float(sympy.sympify(expr))


def _has_positive_constant(expr):
    """Whether a sum of squares has a constant term > 0 (so it is never 0)."""
    constant, _ = sympy.sympify(expr).as_coeff_Add()
    return float(constant) > 0


def _safe_norm(sum_of_squares):
    """sqrt(s), with sqrt(s + eps) where s can be 0, so its gradient stays finite."""
    if _is_number(sum_of_squares):
        return math.sqrt(_number(sum_of_squares))
    if _has_positive_constant(sum_of_squares):
        return sympy.sqrt(sum_of_squares)
    return sympy.sqrt(sum_of_squares + _NORM_EPS)


def _split_angle(left_norm, right_norm):
    """Ry angle sending |0> to (left_norm |0> + right_norm |1>) / norm."""
    if _is_number(left_norm) and _is_number(right_norm):
        return 2.0 * math.atan2(_number(right_norm), _number(left_norm))
    return 2 * sympy.atan2(right_norm, left_norm)


def _leaf_angle(x, y):
    """Ry angle sending |0> to (x |0> + y |1>) / sqrt(x^2 + y^2), signs kept.

    2*atan2(y, x), except that where (x, y) can be (0, 0) it is evaluated at
    (y * (1 - eps / (r2 + eps)), x + sqrt(eps)), r2 = x^2 + y^2: the same
    value to float precision unless |(x, y)| is below ~1e-10, never
    atan2(0, 0), and a gradient of exactly 0 at x = y = 0 instead of NaN.
    The factor is written as 1 - eps / (r2 + eps) rather than r2 / (r2 + eps)
    so that sympy keeps it apart from y: at 0, TF's gradient of
    (y * r2) / (r2 + eps) passes through upstream / (sqrt(eps) * eps), which
    overflows float32 to inf (then inf * 0 = NaN) under loss scaling.
    """
    if _is_number(x) and _is_number(y):
        return 2.0 * math.atan2(_number(y), _number(x))
    r2 = x**2 + y**2
    if _has_positive_constant(r2):  # a nonzero padding value: never (0, 0)
        return 2 * sympy.atan2(y, x)
    return 2 * sympy.atan2(y * (1 - _NORM_EPS / (r2 + _NORM_EPS)), x + _SHIFT)


def _gray(j):
    return j ^ (j >> 1)


def _uniformly_controlled_ry(thetas, controls, target):
    """Ops of sum_p |p><p| (x) Ry(thetas[p]), p over the controls (first = MSB).

    Mottonen et al. (quant-ph/0407010): 2^k Ry rotations interleaved with 2^k
    CNOTs along a Gray code, alpha = M^T theta / 2^k with
    M[p, j] = (-1)^(p . gray(j)).
    """
    k = len(controls)
    if all(_is_number(t) and _number(t) == 0.0 for t in thetas):
        return []  # identity: with zero angles the CNOTs cancel in pairs
    if k == 0:
        theta = thetas[0]
        return [cirq.ry(_number(theta) if _is_number(theta) else theta)(target)]
    size = 2**k
    ops = []
    for j in range(size):
        terms = [t if bin(p & _gray(j)).count("1") % 2 == 0 else -t for p, t in enumerate(thetas)]
        alpha = sympy.Add(*[sympy.sympify(t) for t in terms]) / size
        if _is_number(alpha):
            alpha = _number(alpha)
            if alpha != 0.0:
                ops.append(cirq.ry(alpha)(target))
        else:
            ops.append(cirq.ry(alpha)(target))
        changed_bit = (_gray(j) ^ _gray((j + 1) % size)).bit_length() - 1
        ops.append(cirq.CNOT(controls[k - 1 - changed_bit], target))
    return ops


def amplitude_embedding(qubits, num_features=None, prefix="a", normalize=True, pad_with=0.0):
    """Encodes a real feature vector as the amplitudes of an n-qubit state.

    Features `a_0 ... a_{F-1}` (F <= 2^n), padded with `pad_with` up to 2^n
    entries, become the state `sum_i a_i |i> / ||a||`: feature `i` is the
    amplitude of basis state |i>, whose most significant bit is the first
    qubit. The state is prepared by Mottonen's tree of uniformly controlled
    Ry rotations (quant-ph/0407010): qubit `k` splits each block of
    2^(n-k) amplitudes with angle `2*atan2(norm(right half), norm(left
    half))`, and the last qubit uses the signed `2*atan2(a_odd, a_even)`,
    which keeps the signs. Each level is `2^k` Ry gates and `2^k` CNOTs.

    The angles are sympy expressions of the feature symbols, turned into TF
    ops when the circuit is compiled, so the expectations are differentiable
    with respect to the features. Every angle of level `k` sums `2^k` of
    these expressions, so their total size grows as 4^n: compiling takes
    about 0.5 s at 4 qubits and 8 s at 6, four times more per extra qubit.

    Only real amplitudes are supported. The angles depend only on ratios of
    features, so the state is always the normalized vector.

    Zeros: blocks made only of zero padding are pruned (no gate, constant
    angles). A block of features that are all exactly zero has no direction,
    so the angles use `sqrt(s + 1e-24)` and a shifted atan2 there: values and
    gradients stay finite, the features of an all-zero pair
    `(a_2m, a_2m+1)` get gradient 0 (the true derivative of the normalized
    state is not available from the tree's angles at that point), and every
    other feature gets its true gradient. An all-zero input prepares a fixed,
    arbitrary state, with zero gradients. Features below ~1e-10 in size are
    treated as zero. A `QuantumLayer` built on this circuit saves to `.keras`
    and exports as a SavedModel like any other: `atan2` and `sqrt` are stored
    in the whitelisted expression tree of the circuit's config.

    Args:
      qubits: number of qubits `n` or a sequence of Cirq qubits.
      num_features: number of features `F`, 1 <= F <= 2^n; default 2^n.
      prefix: symbol prefix; the symbols are `{prefix}0 ... {prefix}{F-1}`.
      normalize: must be True: a circuit can only prepare the normalized
        vector (kept for PennyLane/VQNet compatibility).
      pad_with: the constant amplitude of the 2^n - F padded entries.

    Returns:
      `Template(circuit, symbols)`, symbols in feature order.

    Example:

    >>> import cirq, numpy as np
    >>> circuit, features = amplitude_embedding(2, num_features=3)
    >>> values = {"a0": 3.0, "a1": -4.0, "a2": 12.0}
    >>> state = cirq.final_state_vector(cirq.resolve_parameters(circuit, values))
    >>> np.round(state.real * 13, 4) + 0.0
    array([ 3., -4., 12.,  0.], dtype=float32)
    """
    qubits = _qubit_list(qubits)
    n = len(qubits)
    dim = 2**n
    if num_features is None:
        num_features = dim
    num_features = _positive_int(num_features, "num_features")
    if num_features > dim:
        raise ValueError(
            f"num_features={num_features} does not fit in {n} qubits (at most 2**{n} = {dim})"
        )
    if normalize is not True:
        raise ValueError(
            "normalize must be True: the circuit always prepares the normalized vector "
            "a / ||a||; scale the features in the model if their norm matters"
        )
    pad_with = float(pad_with)
    if not math.isfinite(pad_with):
        raise ValueError(f"pad_with must be a finite number, got {pad_with}")
    symbols = [sympy.Symbol(f"{prefix}{i}") for i in range(num_features)]
    amplitudes = list(symbols) + [sympy.Float(pad_with) if pad_with else sympy.Integer(0)] * (
        dim - num_features
    )
    ops = []
    for level in range(n):
        block = 2 ** (n - level)
        thetas = []
        for p in range(2**level):
            values = amplitudes[p * block : (p + 1) * block]
            half = block // 2
            if half == 1:
                thetas.append(_leaf_angle(values[0], values[1]))
                continue
            left = sympy.Add(*[v**2 for v in values[:half]])
            right = sympy.Add(*[v**2 for v in values[half:]])
            if _is_number(right) and _number(right) == 0.0:
                thetas.append(0.0)  # nothing to move right (or an all-padding block)
                continue
            thetas.append(_split_angle(_safe_norm(left), _safe_norm(right)))
        ops.extend(_uniformly_controlled_ry(thetas, qubits[:level], qubits[level]))
    return Template(cirq.Circuit(ops), symbols)


# -------------------------------------------------------------------- ansatze


def hardware_efficient(qubits, depth, prefix="w", entangle="chain"):
    """The QCCNN ansatz: layers of Ry on every qubit, then a CNOT ladder.

    Layer `l` is `Ry(w_{l}_{i})` on every qubit `i`, then CNOT(q_i, q_{i+1})
    for i = 0 .. n-2 (`entangle="chain"`), plus CNOT(q_{n-1}, q_0) for
    `entangle="ring"` when n > 2. It keeps the state real, as in the
    hybrid quantum-classical CNN (QCCNN) of Liu et al. (arXiv:1911.02998).

    Args:
      qubits: number of qubits `n` or a sequence of Cirq qubits.
      depth: number of layers, >= 1.
      prefix: weight symbols are `{prefix}_{layer}_{qubit}`.
      entangle: `"chain"` (open ladder) or `"ring"` (closed).

    Returns:
      `Template(circuit, symbols)`, symbols layer by layer, qubit by qubit.

    Example:

    Angle-encode 4 features, add two ansatz layers, and measure Z on each
    qubit with a `QuantumLayer` whose inputs feed the encoding:

    >>> import cirq, keras
    >>> from qkeras_hybrid.layers import QuantumLayer
    >>> encoding = angle_embedding(4)
    >>> ansatz = hardware_efficient(4, depth=2)
    >>> ansatz.symbols[:3]
    [w_0_0, w_0_1, w_0_2]
    >>> circuit = encoding.circuit + ansatz.circuit
    >>> layer = QuantumLayer(circuit, [cirq.Z(q) for q in cirq.LineQubit.range(4)],
    ...                      input_symbols=encoding.symbols,
    ...                      weight_symbols=ansatz.symbols)
    >>> layer(keras.ops.zeros((3, 4))).shape
    TensorShape([3, 4])
    """
    qubits = _qubit_list(qubits)
    depth = _positive_int(depth, "depth")
    if entangle not in ("chain", "ring"):
        raise ValueError(f"entangle must be 'chain' or 'ring', got {entangle!r}")
    n = len(qubits)
    pairs = [(i, i + 1) for i in range(n - 1)]
    if entangle == "ring" and n > 2:
        pairs.append((n - 1, 0))
    symbols, ops = [], []
    for layer in range(depth):
        for i, q in enumerate(qubits):
            w = sympy.Symbol(f"{prefix}_{layer}_{i}")
            symbols.append(w)
            ops.append(cirq.ry(w)(q))
        ops.extend(cirq.CNOT(qubits[a], qubits[b]) for a, b in pairs)
    return Template(cirq.Circuit(ops), symbols)


def strongly_entangling(qubits, depth, prefix="w", ranges=None):
    """PennyLane's StronglyEntanglingLayers.

    Layer `l` applies the general rotation Rz(w_{l}_{i}_0), Ry(w_{l}_{i}_1),
    Rz(w_{l}_{i}_2) (in that time order, PennyLane's `Rot`) to every qubit
    `i`, then CNOT(q_i, q_{(i + r_l) mod n}) for i = 0 .. n-1, with range
    `r_l = (l mod (n - 1)) + 1` by default. A single qubit gets no CNOTs.

    Args:
      qubits: number of qubits `n` or a sequence of Cirq qubits.
      depth: number of layers, >= 1.
      prefix: weight symbols are `{prefix}_{layer}_{qubit}_{k}`, k = 0, 1, 2.
      ranges: optional sequence of `depth` CNOT ranges, each not a multiple
        of n.

    Returns:
      `Template(circuit, symbols)`, symbols layer by layer, qubit by qubit,
      angle by angle (the order of PennyLane's weights of shape
      `(depth, n, 3)` flattened).

    Example:

    >>> import cirq
    >>> circuit, ws = strongly_entangling(3, depth=2)
    >>> len(ws), ws[:4]
    (18, [w_0_0_0, w_0_0_1, w_0_0_2, w_0_1_0])
    >>> len(list(circuit.findall_operations(lambda op: op.gate == cirq.CNOT)))
    6
    """
    qubits = _qubit_list(qubits)
    depth = _positive_int(depth, "depth")
    n = len(qubits)
    if ranges is None:
        ranges = [(layer % (n - 1)) + 1 if n > 1 else 0 for layer in range(depth)]
    else:
        ranges = list(ranges)
        if len(ranges) != depth:
            raise ValueError(f"ranges must have one entry per layer ({depth}), got {len(ranges)}")
        if n > 1:
            bad = [r for r in ranges if not isinstance(r, (int, np.integer)) or r % n == 0]
            if bad:
                raise ValueError(f"ranges must be integers that are not multiples of {n}, got {bad}")
    symbols, ops = [], []
    for layer in range(depth):
        for i, q in enumerate(qubits):
            a, b, c = (sympy.Symbol(f"{prefix}_{layer}_{i}_{k}") for k in range(3))
            symbols += [a, b, c]
            ops += [cirq.rz(a)(q), cirq.ry(b)(q), cirq.rz(c)(q)]
        if n > 1:
            r = int(ranges[layer])
            ops.extend(cirq.CNOT(qubits[i], qubits[(i + r) % n]) for i in range(n))
    return Template(cirq.Circuit(ops), symbols)
