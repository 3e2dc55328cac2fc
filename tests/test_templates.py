"""Circuit templates against independent references.

References: closed forms (cos/sin of angle encodings), numpy matrices built
gate by gate, Cirq's complex128 simulator, and central finite differences of
the numpy expectation <a|O|a> / <a|a> in float64.
"""

import doctest
import functools
import itertools

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid as qh
from qkeras_hybrid.circuits import templates
from qkeras_hybrid.circuits.templates import (
    Template,
    amplitude_embedding,
    angle_embedding,
    basis_embedding,
    hardware_efficient,
    strongly_entangling,
)
from qkeras_hybrid.layers import QuantumLayer

from conftest import central_fd

SIM = cirq.Simulator(dtype=np.complex128)

# ------------------------------------------------------------ numpy references

I2 = np.eye(2)
PAULI = {"I": I2, "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
         "Z": np.diag([1.0, -1.0])}


def rx(t):
    return np.array([[np.cos(t / 2), -1j * np.sin(t / 2)], [-1j * np.sin(t / 2), np.cos(t / 2)]])


def ry(t):
    return np.array([[np.cos(t / 2), -np.sin(t / 2)], [np.sin(t / 2), np.cos(t / 2)]])


def rz(t):
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def on_qubit(n, i, gate):
    """gate on qubit i of n, qubit 0 the most significant bit."""
    mats = [gate if k == i else I2 for k in range(n)]
    return functools.reduce(np.kron, mats)


def cnot(n, control, target):
    dim = 2**n
    u = np.zeros((dim, dim))
    for j in range(dim):
        bit = (j >> (n - 1 - control)) & 1
        u[j ^ (bit << (n - 1 - target)), j] = 1
    return u


def pauli_matrix(n, paulis):
    """{qubit: 'X'|'Y'|'Z'} as a 2^n x 2^n matrix."""
    return functools.reduce(np.kron, [PAULI[paulis.get(k, "I")] for k in range(n)])


def simulate(circuit, symbols, values, qubits):
    resolver = cirq.ParamResolver({s: float(v) for s, v in zip(symbols, values)})
    return SIM.simulate(circuit, resolver, qubit_order=qubits).final_state_vector


def unitary(circuit, symbols, values, qubits):
    resolved = cirq.resolve_parameters(circuit, {s: float(v) for s, v in zip(symbols, values)})
    return resolved.unitary(qubit_order=qubits)


def count(circuit, predicate):
    return sum(1 for op in circuit.all_operations() if predicate(op))


def is_cnot(op):
    return op.gate == cirq.CNOT


def is_ry(op):
    return isinstance(op.gate, cirq.Ry)


def assert_same_state(state, reference, atol=1e-6):
    """Equal up to a global phase."""
    overlap = np.vdot(reference, state)
    assert abs(abs(overlap) - 1) < atol, (state, reference)
    np.testing.assert_allclose(state * np.conj(overlap) / abs(overlap), reference, atol=atol)


# ------------------------------------------------------------- angle encoding


@pytest.mark.parametrize("rotation", ["X", "Y", "Z", "y"])
def test_angle_embedding_state_and_expectations_match_closed_form(rotation):
    n = 3
    circuit, xs = angle_embedding(n, rotation=rotation)
    assert [str(s) for s in xs] == ["x0", "x1", "x2"]
    qubits = cirq.LineQubit.range(n)
    x = np.random.default_rng(0).uniform(-np.pi, np.pi, size=n)
    single = {"X": rx, "Y": ry, "Z": rz}[rotation.upper()]
    reference = functools.reduce(np.kron, [single(t) @ np.array([1.0, 0.0]) for t in x])
    np.testing.assert_allclose(simulate(circuit, xs, x, qubits), reference, atol=1e-7)

    # <Z> = cos x for Rx and Ry, 1 for Rz; <X> = sin x for Ry; <Y> = -sin x for Rx.
    observables = [cirq.Z(q) for q in qubits] + [cirq.X(q) for q in qubits] + [cirq.Y(q) for q in qubits]
    zeros = np.zeros(n)
    expected = {
        "X": np.concatenate([np.cos(x), zeros, -np.sin(x)]),
        "Y": np.concatenate([np.cos(x), np.sin(x), zeros]),
        "Z": np.concatenate([np.ones(n), zeros, zeros]),
    }[rotation.upper()]
    compiled = qh.compile_circuit(circuit, observables, symbols=xs)
    got = compiled.expectation(x[None, :], dtype=tf.float64).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_angle_embedding_on_given_qubits_and_bad_rotation():
    qubits = [cirq.GridQubit(1, 0), cirq.GridQubit(0, 0)]
    circuit, xs = angle_embedding(qubits, prefix="f")
    assert [str(s) for s in xs] == ["f0", "f1"]
    assert [op.qubits[0] for op in circuit.all_operations()] == qubits
    assert [op.gate for op in circuit.all_operations()] == [cirq.ry(s) for s in xs]
    with pytest.raises(ValueError, match="'W'"):
        angle_embedding(2, rotation="W")
    with pytest.raises(ValueError, match="more than once"):
        angle_embedding([qubits[0], qubits[0]])
    with pytest.raises(ValueError, match="positive"):
        angle_embedding(0)


# ------------------------------------------------------------- basis encoding


def test_basis_embedding_prepares_each_basis_state():
    n = 3
    qubits = cirq.LineQubit.range(n)
    circuit, bs = basis_embedding(n)
    assert [str(s) for s in bs] == ["b0", "b1", "b2"]
    compiled = qh.compile_circuit(circuit, [cirq.Z(q) for q in qubits], symbols=bs)
    for bits in itertools.product([0, 1], repeat=n):
        index = int("".join(map(str, bits)), 2)
        state = simulate(circuit, bs, bits, qubits)
        np.testing.assert_allclose(state, np.eye(2**n)[index], atol=1e-7)
        plain = cirq.Circuit([cirq.I(q) for q in qubits], [cirq.X(q) for q, b in zip(qubits, bits) if b])
        np.testing.assert_allclose(state, SIM.simulate(plain, qubit_order=qubits).final_state_vector, atol=1e-7)
        got = compiled.expectation(np.array([bits], dtype=float), dtype=tf.float64).numpy()[0]
        np.testing.assert_allclose(got, 1 - 2 * np.array(bits), atol=1e-7)


# --------------------------------------------------------- amplitude encoding

AMPLITUDE_CASES = [(1, 1), (1, 2), (2, 3), (2, 4), (3, 5), (3, 6), (3, 8), (4, 11), (4, 16)]


def padded_unit(values, dim, pad=0.0):
    full = np.full(dim, pad, dtype=float)
    full[: len(values)] = values
    return full / np.linalg.norm(full)


def resolve_rotations(circuit, symbols):
    """A function values -> resolved circuit, with each Ry angle lambdified to
    numpy once (Cirq's ParamResolver substitutes into the large sympy angles
    for every vector, which takes seconds at 4 qubits)."""
    items = []
    for op in circuit.all_operations():
        if cirq.is_parameterized(op):
            assert is_ry(op), op
            items.append((sympy.lambdify(symbols, op.gate.exponent * sympy.pi, "numpy"), op.qubits))
        else:
            items.append((None, op))

    def resolve(values):
        return cirq.Circuit(
            cirq.ry(float(f(*values)))(*item) if f is not None else item for f, item in items
        )

    return resolve


@pytest.mark.parametrize("n,num_features", AMPLITUDE_CASES)
def test_amplitude_embedding_state_is_normalized_padded_vector(n, num_features):
    qubits = cirq.LineQubit.range(n)
    circuit, features = amplitude_embedding(n, num_features=num_features)
    assert [str(s) for s in features] == [f"a{i}" for i in range(num_features)]
    resolve = resolve_rotations(circuit, features)
    rng = np.random.default_rng(10 * n + num_features)
    vectors = [rng.normal(size=num_features) * rng.uniform(0.1, 10) for _ in range(3)]
    if num_features >= 4:  # exact zeros: a whole pair, and a single entry
        vectors.append(np.where(np.arange(num_features) < 2, 0.0, rng.normal(size=num_features)))
        vectors.append(np.where(np.arange(num_features) == num_features - 1, 0.0, vectors[0]))
    for v in vectors:
        state = SIM.simulate(resolve(v), qubit_order=qubits).final_state_vector
        assert_same_state(state, padded_unit(v, 2**n))
    if n <= 3:  # Cirq's own ParamResolver on the symbolic circuit agrees
        assert_same_state(simulate(circuit, features, vectors[0], qubits), padded_unit(vectors[0], 2**n))


def test_amplitude_embedding_nonzero_padding_and_qubit_order():
    qubits = [cirq.GridQubit(0, 2), cirq.GridQubit(0, 0), cirq.GridQubit(0, 1)]
    circuit, features = amplitude_embedding(qubits, num_features=5, pad_with=0.5, prefix="p")
    assert [str(s) for s in features] == ["p0", "p1", "p2", "p3", "p4"]
    v = np.random.default_rng(3).normal(size=5)
    assert_same_state(simulate(circuit, features, v, qubits), padded_unit(v, 8, pad=0.5))


def test_amplitude_embedding_prunes_zero_padding():
    # 2 features on 3 qubits: only the last qubit's rotation depends on them,
    # and the two upper levels (splitting off zero padding) have no gates.
    circuit, features = amplitude_embedding(3, num_features=2)
    assert count(circuit, is_ry) == 4 and count(circuit, is_cnot) == 4
    assert len(list(circuit.all_operations())) == 8
    assert cirq.parameter_symbols(circuit) == set(features)
    assert all(op.qubits[-1] == cirq.LineQubit(2) for op in circuit.all_operations())
    # A full register: 2^k Ry and (k > 0) 2^k CNOTs at level k.
    circuit, _ = amplitude_embedding(3)
    assert count(circuit, is_ry) == 1 + 2 + 4 and count(circuit, is_cnot) == 2 + 4


def test_amplitude_embedding_argument_errors():
    with pytest.raises(ValueError, match="does not fit"):
        amplitude_embedding(2, num_features=5)
    with pytest.raises(ValueError, match="num_features"):
        amplitude_embedding(2, num_features=0)
    with pytest.raises(ValueError, match="normalize"):
        amplitude_embedding(2, normalize=False)
    with pytest.raises(ValueError, match="pad_with"):
        amplitude_embedding(2, num_features=3, pad_with=float("nan"))


def numpy_expectations(vectors, matrices, dim):
    out = []
    for v in np.atleast_2d(vectors):
        psi = padded_unit(v, dim)
        out.append([np.real(np.vdot(psi, m @ psi)) for m in matrices])
    return np.array(out)


def amplitude_observables(n):
    """Z on each qubit, Z Z on neighbours, and an X/Y mixture (real states)."""
    qubits = cirq.LineQubit.range(n)
    obs, mats = [], []
    for i in range(n):
        obs.append(cirq.Z(qubits[i]))
        mats.append(pauli_matrix(n, {i: "Z"}))
    for i in range(n - 1):
        obs.append(cirq.Z(qubits[i]) * cirq.Z(qubits[i + 1]))
        mats.append(pauli_matrix(n, {i: "Z", i + 1: "Z"}))
    if n >= 2:
        obs.append(0.7 * cirq.X(qubits[0]) * cirq.Z(qubits[-1]) - 0.4 * cirq.Y(qubits[0]) * cirq.Y(qubits[1]))
        mats.append(0.7 * pauli_matrix(n, {0: "X", n - 1: "Z"}) - 0.4 * pauli_matrix(n, {0: "Y", 1: "Y"}))
    return obs, mats


@pytest.mark.parametrize("n,num_features", [(2, 3), (3, 8), (3, 5), (4, 13)])
def test_amplitude_embedding_expectations_and_gradients(n, num_features):
    circuit, features = amplitude_embedding(n, num_features=num_features)
    obs, mats = amplitude_observables(n)
    compiled = qh.compile_circuit(circuit, obs, symbols=features)
    rng = np.random.default_rng(n * 100 + num_features)
    x = rng.normal(size=(3, num_features))
    weights = rng.uniform(-1, 1, size=len(obs))

    got = compiled.expectation(x, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got, numpy_expectations(x, mats, 2**n), atol=1e-6)
    got32 = compiled.expectation(x.astype(np.float32), dtype=tf.float32).numpy()
    np.testing.assert_allclose(got32, got, atol=1e-5)

    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(compiled.expectation(xv, dtype=tf.float64) * weights)
    grad = tape.gradient(loss, xv).numpy()
    assert np.all(np.isfinite(grad))
    for row in range(len(x)):
        reference = central_fd(lambda v: numpy_expectations(v, mats, 2**n)[0] @ weights, x[row], eps=1e-6)
        np.testing.assert_allclose(grad[row], reference, atol=1e-6)


LOSS_SCALE = 2.0**15


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_amplitude_embedding_gradients_at_zeros_are_finite(dtype):
    n, num_features = 3, 8
    circuit, features = amplitude_embedding(n, num_features=num_features)
    obs, mats = amplitude_observables(n)
    compiled = qh.compile_circuit(circuit, obs, symbols=features)
    rng = np.random.default_rng(7)
    weights = rng.uniform(-1, 1, size=len(obs))
    base = rng.normal(size=num_features)
    zero_masks = [
        np.arange(8) < 2,  # one leaf pair
        (np.arange(8) >= 4),  # the right half
        np.arange(8) != 5,  # all but one (its partner a4 is a zero in a nonzero pair)
        np.ones(8, dtype=bool),  # everything
    ]
    for mask in zero_masks:
        x = np.where(mask, 0.0, base)
        xv = tf.Variable(x[None, :], dtype=dtype)
        with tf.GradientTape() as tape:
            values = compiled.expectation(xv, dtype=dtype)
            # Scaled like a mixed-precision loss: no intermediate may overflow.
            loss = LOSS_SCALE * tf.reduce_sum(values * tf.constant(weights, dtype))
        grad = tape.gradient(loss, xv).numpy()[0] / LOSS_SCALE
        assert np.all(np.isfinite(values.numpy())) and np.all(np.isfinite(grad)), (mask, grad)
        # Documented: features of an all-zero pair (a_2m, a_2m+1) get gradient 0.
        zero_pair = np.repeat(mask.reshape(-1, 2).all(axis=1), 2)
        assert np.all(grad[zero_pair] == 0.0), grad
        if mask.all():
            continue
        atol = 1e-6 if dtype == tf.float64 else 2e-4
        np.testing.assert_allclose(values.numpy()[0], numpy_expectations(x, mats, 8)[0], atol=atol)
        free = ~zero_pair  # every other feature has its true gradient

        def f(v):
            full = x.copy()
            full[free] = v
            return numpy_expectations(full, mats, 8)[0] @ weights

        np.testing.assert_allclose(grad[free], central_fd(f, x[free], eps=1e-6), atol=atol)


# -------------------------------------------------------------------- ansatze


def hardware_efficient_reference(n, depth, w, pairs):
    u = np.eye(2**n)
    for layer in range(depth):
        for i in range(n):
            u = on_qubit(n, i, ry(w[layer * n + i])) @ u
        for a, b in pairs:
            u = cnot(n, a, b) @ u
    return u


def test_amplitude_embedding_layer_survives_keras_save_and_savedmodel_export(tmp_path):
    # Its angles use atan2 and sqrt: the docstring promises they are saved.
    circuit, features = amplitude_embedding(2, num_features=3)
    obs, mats = amplitude_observables(2)
    model = keras.Sequential([keras.Input((3,)), QuantumLayer(circuit, obs, input_symbols=features)])
    x = np.array([[3.0, -4.0, 12.0], [1.0, 2.0, 0.5]], np.float32)
    expected = model(x).numpy()
    np.testing.assert_allclose(expected, numpy_expectations(x, mats, 4), atol=1e-5)
    model.save(tmp_path / "amplitude.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "amplitude.keras")(x), expected, atol=1e-6)
    model.export(str(tmp_path / "amplitude_savedmodel"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "amplitude_savedmodel"))
    np.testing.assert_allclose(reloaded.serve(tf.constant(x)), expected, atol=1e-6)


@pytest.mark.parametrize("n,depth,entangle", [(1, 2, "chain"), (2, 2, "ring"), (3, 2, "chain"), (4, 3, "ring")])
def test_hardware_efficient_structure_and_unitary(n, depth, entangle):
    circuit, ws = hardware_efficient(n, depth, entangle=entangle)
    assert [str(s) for s in ws] == [f"w_{l}_{i}" for l in range(depth) for i in range(n)]
    pairs = [(i, i + 1) for i in range(n - 1)] + ([(n - 1, 0)] if entangle == "ring" and n > 2 else [])
    assert count(circuit, is_ry) == depth * n
    assert count(circuit, is_cnot) == depth * len(pairs)
    assert len(list(circuit.all_operations())) == depth * (n + len(pairs))
    w = np.random.default_rng(n).uniform(-np.pi, np.pi, size=len(ws))
    qubits = cirq.LineQubit.range(n)
    np.testing.assert_allclose(unitary(circuit, ws, w, qubits), hardware_efficient_reference(n, depth, w, pairs),
                               atol=1e-7)


def test_hardware_efficient_follows_the_given_qubit_order_and_validates():
    qubits = [cirq.GridQubit(0, 1), cirq.GridQubit(0, 0), cirq.GridQubit(1, 0)]
    circuit, ws = hardware_efficient(qubits, 1, prefix="t", entangle="ring")
    assert [str(s) for s in ws] == ["t_0_0", "t_0_1", "t_0_2"]
    cnots = [op.qubits for op in circuit.all_operations() if is_cnot(op)]
    assert cnots == [(qubits[0], qubits[1]), (qubits[1], qubits[2]), (qubits[2], qubits[0])]
    with pytest.raises(ValueError, match="entangle"):
        hardware_efficient(3, 1, entangle="all")
    with pytest.raises(ValueError, match="depth"):
        hardware_efficient(3, 0)


def strongly_entangling_reference(n, depth, w, ranges):
    u = np.eye(2**n)
    w = np.reshape(w, (depth, n, 3))
    for layer in range(depth):
        for i in range(n):
            a, b, c = w[layer, i]
            u = on_qubit(n, i, rz(c) @ ry(b) @ rz(a)) @ u
        if n > 1:
            for i in range(n):
                u = cnot(n, i, (i + ranges[layer]) % n) @ u
    return u


@pytest.mark.parametrize("n,depth,ranges", [(1, 2, None), (2, 2, None), (3, 3, None), (4, 4, None),
                                            (4, 2, [3, 2])])
def test_strongly_entangling_structure_and_unitary(n, depth, ranges):
    circuit, ws = strongly_entangling(n, depth, ranges=ranges)
    assert [str(s) for s in ws] == [f"w_{l}_{i}_{k}" for l in range(depth) for i in range(n) for k in range(3)]
    assert count(circuit, lambda op: isinstance(op.gate, (cirq.Rz, cirq.Ry))) == 3 * n * depth
    assert count(circuit, is_cnot) == (n * depth if n > 1 else 0)
    expected_ranges = ranges or [(l % (n - 1)) + 1 if n > 1 else 0 for l in range(depth)]
    qubits = cirq.LineQubit.range(n)
    cnots = [op.qubits for op in circuit.all_operations() if is_cnot(op)]
    assert cnots == [(qubits[i], qubits[(i + r) % n]) for r in (expected_ranges if n > 1 else []) for i in range(n)]
    w = np.random.default_rng(n + depth).uniform(-np.pi, np.pi, size=len(ws))
    np.testing.assert_allclose(unitary(circuit, ws, w, qubits),
                               strongly_entangling_reference(n, depth, w, expected_ranges), atol=1e-7)


def test_strongly_entangling_validates_ranges():
    with pytest.raises(ValueError, match="one entry per layer"):
        strongly_entangling(3, 2, ranges=[1])
    with pytest.raises(ValueError, match="multiples of 3"):
        strongly_entangling(3, 2, ranges=[1, 3])


# ------------------------------------------------------------ composition


def test_templates_compose():
    encoding, ansatz = angle_embedding(2), hardware_efficient(2, 1)
    both = encoding + ansatz
    assert isinstance(both, Template)
    assert both.circuit == encoding.circuit + ansatz.circuit
    assert both.symbols == encoding.symbols + ansatz.symbols
    circuit, symbols = both  # unpacks like a tuple
    assert circuit is both.circuit and symbols is both.symbols
    with pytest.raises(ValueError, match="share symbols"):
        ansatz + hardware_efficient(2, 1)
    with pytest.raises(TypeError, match="template.circuit"):
        encoding + ansatz.circuit


def test_module_docstring_examples_run():
    result = doctest.testmod(templates, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_quantum_layer_from_angle_embedding_and_hardware_efficient_trains():
    keras.utils.set_random_seed(0)
    n = 2
    qubits = cirq.LineQubit.range(n)
    template = angle_embedding(n) + hardware_efficient(n, depth=2)
    xs = template.symbols[:n]
    layer = QuantumLayer(template.circuit, [cirq.Z(q) for q in qubits], input_symbols=xs)
    assert layer.input_symbols == ["x0", "x1"] and len(layer.weight_symbols) == 4

    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, size=(64, n)).astype("float32")
    y = (np.cos(x[:, :1]) * np.cos(x[:, 1:]) > 0).astype("float32")  # XOR-like sign of a product
    model = keras.Sequential([keras.Input((n,)), layer, keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="binary_crossentropy")
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
