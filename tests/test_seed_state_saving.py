"""Seed states in `.keras` files, and density matrices too large to simulate.

Keras saves a layer's own variables but not its `SeedGenerator`'s state: a
layer that samples (shots=) or runs trajectories must keep it itself, so that
a reloaded model continues its random sequence instead of repeating draws it
already used. Every layer with a seed generator is checked here.
"""

import json
import zipfile

import cirq
import h5py
import keras
import numpy as np
import pytest
import sympy

from conftest import run_fresh_python
from qkeras_hybrid.backends import _validation
from qkeras_hybrid.layers import ProbabilityLayer, QuantumConv2D, QuantumLayer, SampleLayer

Q = cirq.LineQubit.range(3)
X = sympy.symbols("x0:2")
W = sympy.symbols("w0:3")
XS = np.array([[0.4, -1.1], [2.3, 0.8]])
IMAGES = np.random.default_rng(0).uniform(0, 1, (1, 3, 3, 1))
NOISE = cirq.ConstantQubitNoiseModel(cirq.amplitude_damp(0.2))
SEED = 5
CALLS = 2  # calls before saving: the state is then [SEED, CALLS]


def circuit():
    return cirq.Circuit([cirq.rx(X[0])(Q[0]), cirq.ry(X[1])(Q[1]), cirq.H(Q[2])],
                        [cirq.ry(w)(q) for w, q in zip(W, Q)], cirq.CNOT(Q[0], Q[1]), cirq.CNOT(Q[1], Q[2]))


def quantum_layer(**kwargs):
    return QuantumLayer(circuit(), [cirq.Z(Q[0]), cirq.X(Q[1]) * cirq.Z(Q[2])], input_symbols=list(X),
                        dtype="float64", seed=SEED, **kwargs)


def measurement_layer(cls, **kwargs):
    return cls(circuit(), qubits=[Q[2], Q[0]], input_symbols=list(X), dtype="float64", seed=SEED, **kwargs)


def conv_layer(**kwargs):
    return QuantumConv2D(filters=2, kernel_size=2, depth=1, dtype="float64", seed=SEED, **kwargs)


TRAJECTORIES = {"noise": NOISE, "simulation": "trajectories", "trajectories": 3}
LAYERS = {
    "quantum_layer_shots": (lambda: quantum_layer(shots=20), XS),
    "quantum_layer_trajectories": (lambda: quantum_layer(**TRAJECTORIES), XS),
    "quantum_conv2d_shots": (lambda: conv_layer(shots=20), IMAGES),
    "quantum_conv2d_trajectories": (lambda: conv_layer(**TRAJECTORIES), IMAGES),
    "probability_layer_shots": (lambda: measurement_layer(ProbabilityLayer, shots=20), XS),
    "probability_layer_trajectories": (lambda: measurement_layer(ProbabilityLayer, **TRAJECTORIES), XS),
    "sample_layer": (lambda: measurement_layer(SampleLayer, shots=20), XS),
    "sample_layer_trajectories": (lambda: measurement_layer(SampleLayer, shots=20, **TRAJECTORIES), XS),
}


def saved_model(make, x, path):
    """A model around a new layer, called CALLS times and saved to `path`: (model, its layer)."""
    layer = make()
    inputs = keras.Input(x.shape[1:], dtype="float64")
    model = keras.Model(inputs, layer(inputs))
    for _ in range(CALLS):
        model(x)
    model.save(path)
    return model, layer


def seeded_layer(model):
    return next(layer for layer in model.layers if hasattr(layer, "_seed_generator"))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_reloaded_layer_continues_the_seed_sequence(name, tmp_path):
    make, x = LAYERS[name]
    path = str(tmp_path / f"{name}.keras")
    model, layer = saved_model(make, x, path)
    saved_state = layer._seed_generator.state.numpy()
    np.testing.assert_array_equal(saved_state, [SEED, CALLS])
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(seeded_layer(reloaded)._seed_generator.state.numpy(), saved_state)
    np.testing.assert_array_equal(reloaded.get_weights()[0], model.get_weights()[0])
    for _ in range(2):  # the next draws, and the state after them, agree
        expected, got = model(x).numpy(), reloaded(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(seeded_layer(reloaded)._seed_generator.state.numpy(), [SEED, CALLS + 2])
    # The draws do depend on the state: a layer restarting at [SEED, 0] would repeat its first output.
    fresh = keras.saving.load_model(path)
    seeded_layer(fresh)._seed_generator.state.assign([SEED, 0])
    assert not np.array_equal(fresh(x).numpy(), model(x).numpy())


def drop_seed_state(path):
    """Rewrites a `.keras` file as one saved before layers kept their seed state."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    weights = path + ".weights.h5"
    with open(weights, "wb") as f:
        f.write(files["model.weights.h5"])
    dropped = []
    with h5py.File(weights, "a") as h5:
        def visit(name, item):
            if name.endswith("/vars/seed_state"):
                dropped.append(name)
        h5.visititems(visit)
        for name in dropped:
            del h5[name]
    with open(weights, "rb") as f:
        files["model.weights.h5"] = f.read()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return dropped


@pytest.mark.parametrize("name", ["quantum_layer_shots", "quantum_conv2d_trajectories", "sample_layer"])
def test_files_without_seed_state_still_load(name, tmp_path):
    make, x = LAYERS[name]
    path = str(tmp_path / f"{name}.keras")
    model, _ = saved_model(make, x, path)
    assert len(drop_seed_state(path)) == 1
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.get_weights()[0], model.get_weights()[0])
    # Such a file knows only the seed: the sequence restarts there.
    np.testing.assert_array_equal(seeded_layer(reloaded)._seed_generator.state.numpy(), [SEED, 0])
    first = make()
    first(x)
    first.set_weights([reloaded.get_weights()[0]])
    first._seed_generator.state.assign([SEED, 0])
    np.testing.assert_allclose(reloaded(x).numpy(), first(x).numpy(), rtol=0, atol=1e-12)


def test_layers_without_randomness_save_no_seed_state(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, quantum_layer()(inputs))
    path = str(tmp_path / "exact.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f) as h5:
        names = []
        h5.visit(names.append)
    assert not [n for n in names if n.endswith("seed_state")]
    np.testing.assert_allclose(keras.saving.load_model(path)(XS).numpy(), model(XS).numpy(), atol=1e-12)


def test_fresh_process_continues_the_sequence(tmp_path):
    path = str(tmp_path / "shots.keras")
    model, _ = saved_model(LAYERS["quantum_layer_shots"][0], XS, path)
    expected = [model(XS).numpy() for _ in range(2)]
    out = run_fresh_python(f"""
        import json, keras, numpy as np
        import qkeras_hybrid
        model = keras.saving.load_model({path!r})
        x = np.array({XS.tolist()})
        print(json.dumps([model(x).numpy().tolist() for _ in range(2)]))
    """)
    np.testing.assert_allclose(np.array(json.loads(out.strip().splitlines()[-1])), expected, rtol=0, atol=1e-12)


# --- density matrices too large for the native op -----------------------------------------------------------

MEMORY = 24 * 2**30  # fixed, so that the limit does not depend on the machine: 0.8 * 24 GiB / 16 B -> 30 qubits


@pytest.fixture
def fixed_memory(monkeypatch):
    monkeypatch.setattr(_validation, "physical_memory_bytes", lambda: MEMORY)


def big_circuit(n):
    qubits = cirq.LineQubit.range(n)
    return cirq.Circuit([cirq.ry(sympy.Symbol(f"w{i}"))(q) for i, q in enumerate(qubits)],
                        [cirq.CNOT(a, b) for a, b in zip(qubits, qubits[1:])]), qubits


def big_layers(n, simulation):
    circuit, qubits = big_circuit(n)
    noise = cirq.ConstantQubitNoiseModel(cirq.depolarize(0.01))
    side = int(round(n**0.5))
    return {
        "QuantumLayer": lambda: QuantumLayer(circuit, cirq.Z(qubits[0]), noise=noise, simulation=simulation),
        "ProbabilityLayer": lambda: ProbabilityLayer(circuit, qubits=qubits[:2], noise=noise,
                                                     simulation=simulation),
        "SampleLayer": lambda: SampleLayer(circuit, shots=4, qubits=qubits[:2], noise=noise, simulation=simulation),
        "QuantumConv2D": lambda: QuantumConv2D(filters=1, kernel_size=side, depth=1, noise=noise,
                                               simulation=simulation),
    }


@pytest.mark.parametrize("layer", ["QuantumLayer", "ProbabilityLayer", "SampleLayer", "QuantumConv2D"])
def test_density_matrix_too_large_is_refused_at_construction(layer, fixed_memory):
    with pytest.raises(ValueError) as error:
        big_layers(16, "density_matrix")[layer]()
    message = str(error.value)
    assert message.startswith(f"{layer}: ")
    for part in ("simulation='density_matrix'", "16 qubits", "32 qubits", "64.0 GiB", "19.2 GiB",
                 "at most 15 qubits", "simulation='trajectories'"):
        assert part in message, (part, message)


@pytest.mark.parametrize("layer", ["QuantumLayer", "ProbabilityLayer", "SampleLayer", "QuantumConv2D"])
def test_density_matrix_at_the_limit_and_trajectories_are_accepted(layer, fixed_memory, monkeypatch):
    # 15 qubits: a 30-qubit vector, the most that fits in 0.8 * 24 GiB at 16 bytes per amplitude.
    assert _validation.max_qubits("native", MEMORY) == 30
    made = big_layers(9 if layer == "QuantumConv2D" else 15, "density_matrix")[layer]()
    assert made.compiled.noisy.simulation == "density_matrix"
    # Trajectories of 16 qubits hold 16-qubit states only.
    assert big_layers(16, "trajectories")[layer]().compiled.noisy.simulation == "trajectories"
    # With less memory the same 15-qubit density matrix no longer fits.
    monkeypatch.setattr(_validation, "physical_memory_bytes", lambda: MEMORY // 2)
    if layer != "QuantumConv2D":
        with pytest.raises(ValueError, match=f"{layer}: .*at most 14 qubits"):
            big_layers(15, "density_matrix")[layer]()
