"""qkeras_hybrid.noise: noise models against Cirq's with_noise and Qiskit Aer, config round trips, errors."""

import json

import numpy as np
import pytest
import sympy

import cirq
from qiskit import QuantumCircuit
from qiskit.providers.fake_provider import GenericBackendV2
from qiskit_aer import AerSimulator
from qiskit_aer.noise import (
    NoiseModel,
    ReadoutError,
    amplitude_damping_error,
    depolarizing_error,
    pauli_error,
    thermal_relaxation_error,
)

from qkeras_hybrid import noise
from qkeras_hybrid.circuits import cirq_compiler, qiskit_compiler
from test_channel_lowering import aer_density_matrix, cirq_density_matrix, density_matrix

Q = cirq.LineQubit.range(3)
A, B = sympy.symbols("a b")


def _cirq_circuit():
    return cirq.Circuit(
        cirq.H(Q[0]),
        cirq.ry(A)(Q[1]),
        cirq.CNOT(Q[0], Q[2]),
        cirq.rx(0.4)(Q[2]),
        (cirq.X**0.5)(Q[1]),
        cirq.CNOT(Q[2], Q[1]),
        cirq.X(Q[0]),
        cirq.ry(B)(Q[0]),
    )


VALUES = {"a": 0.7, "b": -1.3}


def _ours_cirq(circuit, qubits=Q, values=VALUES):
    return density_matrix(cirq_compiler.lower_circuit(circuit, qubits), len(qubits), values)


def _ours_qiskit(circuit):
    return density_matrix(qiskit_compiler.lower_circuit(circuit), circuit.num_qubits)


def _channels_on(circuit):
    """[(channel, qubit indices)] of the noise ops a spec inserted, in order."""
    return [(op.gate, tuple(q.x for q in op.qubits)) for op in circuit.all_operations() if cirq.VirtualTag() in op.tags]


# ------------------------------------------------------------------ cirq.NoiseModel


@pytest.mark.parametrize(
    "model",
    [
        cirq.ConstantQubitNoiseModel(cirq.depolarize(0.01)),
        cirq.ConstantQubitNoiseModel(cirq.amplitude_damp(0.2)),
        cirq.depolarize(0.05),  # noise-model-like: that channel on every qubit after every moment
    ],
    ids=["constant_depolarize", "constant_amplitude_damp", "bare_channel"],
)
def test_cirq_noise_model_is_with_noise(model):
    spec = noise.resolve(model)
    assert isinstance(spec, noise.CirqNoise) and spec.has_channels
    circuit = _cirq_circuit()
    noisy = spec.apply_cirq(circuit)
    assert noisy == circuit.with_noise(model)
    reference = cirq_density_matrix(circuit.with_noise(model), Q, VALUES)
    np.testing.assert_allclose(_ours_cirq(noisy), reference, atol=1e-10)


def test_cirq_noise_model_custom_subclass():
    class AfterCnot(cirq.NoiseModel):
        def noisy_operation(self, op):
            if op.gate == cirq.CNOT:
                return [op, cirq.depolarize(0.1, n_qubits=2).on(*op.qubits)]
            return op

    circuit = _cirq_circuit()
    spec = noise.resolve(AfterCnot())
    assert spec.apply_cirq(circuit) == circuit.with_noise(AfterCnot())
    with pytest.raises(ValueError, match="Cirq noise model .*AfterCnot.* cannot be serialized"):
        spec.get_config()


def test_no_noise_and_none():
    assert noise.resolve(None) is None
    assert not noise.resolve(cirq.NO_NOISE).has_channels


# ------------------------------------------------------------------ per-gate tables, Cirq circuits


def test_gate_noise_inserts_channel_after_each_gate_of_the_kind():
    ry_noise, cx_noise = cirq.depolarize(0.1), cirq.depolarize(0.2, n_qubits=2)
    spec = noise.resolve({"ry": ry_noise, "CNOT": cx_noise})
    assert isinstance(spec, noise.GateNoise) and spec.has_channels
    noisy = spec.apply_cirq(_cirq_circuit())
    assert _channels_on(noisy) == [(ry_noise, (1,)), (cx_noise, (0, 2)), (cx_noise, (2, 1)), (ry_noise, (0,))]
    # Same circuit as the channels inserted by hand, simulated by Cirq.
    by_hand = []
    for op in _cirq_circuit().all_operations():
        by_hand.append(op)
        if isinstance(op.gate, cirq.Ry):
            by_hand.append(ry_noise.on(*op.qubits))
        if op.gate == cirq.CNOT:
            by_hand.append(cx_noise.on(*op.qubits))
    reference = cirq_density_matrix(cirq.Circuit(by_hand), Q, VALUES)
    np.testing.assert_allclose(_ours_cirq(noisy), reference, atol=1e-10)


def test_table_forms_are_equivalent():
    table = {"ry": cirq.depolarize(0.1), "cx": cirq.depolarize(0.2, n_qubits=2)}
    circuit = _cirq_circuit()
    expected = noise.GateNoise(table, readout=0.01).apply_cirq(circuit)
    assert noise.resolve({"gates": table, "readout": 0.01}).apply_cirq(circuit) == expected
    rules = [noise.NoiseRule("RY", table["ry"]), noise.NoiseRule("cnot", table["cx"])]
    assert noise.GateNoise(rules).apply_cirq(circuit) == expected


@pytest.mark.parametrize(
    "gate,names,not_names",
    [
        (cirq.X, ["x", "xpow"], ["rx", "sx"]),
        (cirq.rx(0.3), ["rx", "xpow"], ["x"]),
        (cirq.rx(np.pi), ["rx", "xpow"], ["x"]),  # X up to a phase, but an rx
        (cirq.X**0.5, ["sx", "xpow"], ["x"]),
        (cirq.X ** sympy.Symbol("t"), ["xpow"], ["x", "rx"]),
        (cirq.Z**0.25, ["t", "zpow"], ["s", "rz"]),
        (cirq.CNOT, ["cx", "cnot", "cxpow"], ["cz"]),
        (cirq.CZ**0.5, ["czpow"], ["cz"]),
        (cirq.ISWAP, ["iswap", "iswappow"], ["swap"]),
        (cirq.H, ["h", "hpow"], ["x"]),
    ],
)
def test_gate_kind_names(gate, names, not_names):
    qubits = Q[: cirq.num_qubits(gate)]
    circuit = cirq.Circuit(gate.on(*qubits))
    width = len(qubits)
    channel = cirq.depolarize(0.1, n_qubits=width)
    for name in names:
        assert _channels_on(noise.GateNoise({name: channel}).apply_cirq(circuit)), name
    for name in not_names:
        if noise.gate_kinds.arity(noise.gate_kinds.canonical_name(name, "")) != width:
            continue
        assert not _channels_on(noise.GateNoise({name: channel}).apply_cirq(circuit)), name


def test_cirq_gate_type_and_family_keys():
    class MyGate(cirq.Gate):
        def _num_qubits_(self):
            return 1

        def _unitary_(self):
            return np.eye(2)

    circuit = cirq.Circuit(MyGate().on(Q[0]), cirq.rx(0.2)(Q[1]), cirq.X(Q[2]))
    bit_flip = cirq.bit_flip(0.1)
    assert _channels_on(noise.GateNoise({MyGate: bit_flip}).apply_cirq(circuit)) == [(bit_flip, (0,))]
    by_family = noise.GateNoise({cirq.GateFamily(cirq.XPowGate): bit_flip}).apply_cirq(circuit)
    assert _channels_on(by_family) == [(bit_flip, (1,)), (bit_flip, (2,))]
    assert _channels_on(noise.GateNoise({cirq.X: bit_flip}).apply_cirq(circuit)) == [(bit_flip, (2,))]


def test_qubit_restriction_and_local_rules():
    circuit = cirq.Circuit([cirq.X(q) for q in Q] + [cirq.CNOT(Q[0], Q[1]), cirq.CNOT(Q[1], Q[2])])
    flip, damp = cirq.bit_flip(0.1), cirq.amplitude_damp(0.3)
    dep2 = cirq.depolarize(0.2, n_qubits=2)
    # Channels without qubits apply to gates whose qubits all lie in `qubits`.
    spec = noise.GateNoise({"x": flip, "cx": dep2}, qubits=[0, 1])
    assert _channels_on(spec.apply_cirq(circuit)) == [(flip, (0,)), (flip, (1,)), (dep2, (0, 1))]
    # Cirq qubits and register indices name the same qubits.
    spec_q = noise.GateNoise({"x": flip, "cx": dep2}, qubits=[Q[0], Q[1]])
    assert spec_q.apply_cirq(circuit) == spec.apply_cirq(circuit)
    # Local rules: exact qubits, in order; they override the all-qubit rule of their kind there.
    rules = [noise.NoiseRule("x", flip), noise.NoiseRule("x", damp, (2,)), noise.NoiseRule("cx", dep2, (2, 1))]
    local = noise.GateNoise(rules).apply_cirq(circuit)
    assert _channels_on(local) == [(flip, (0,)), (flip, (1,)), (damp, (2,))]
    local = noise.GateNoise({"cx": {(1, 2): dep2}, "x": {Q[1]: damp}}).apply_cirq(circuit)
    assert _channels_on(local) == [(damp, (1,)), (dep2, (1, 2))]


def test_integer_qubits_index_the_given_register():
    circuit = cirq.Circuit(cirq.X(Q[1]), cirq.X(Q[2]))
    spec = noise.GateNoise({"x": {0: cirq.bit_flip(0.1)}})
    assert _channels_on(spec.apply_cirq(circuit)) == [(cirq.bit_flip(0.1), (1,))]  # default: sorted circuit qubits
    assert _channels_on(spec.apply_cirq(circuit, qubits=Q)) == []  # register Q: index 0 is Q[0], idle


def test_measurement_noise_comes_before_the_measurement_on_each_qubit():
    circuit = cirq.Circuit(cirq.X(Q[0]), cirq.measure(Q[0], Q[1], key="m"))
    flip = cirq.bit_flip(1.0)
    noisy = noise.GateNoise({"measure": flip}).apply_cirq(circuit)
    ops = list(noisy.all_operations())
    assert [op.gate for op in ops[1:3]] == [flip, flip] and cirq.is_measurement(ops[3])
    assert cirq.Simulator().run(noisy, repetitions=5).measurements["m"].tolist() == [[0, 1]] * 5


def test_inserted_channels_are_not_noised_again():
    spec = noise.GateNoise({"x": cirq.X})  # a "channel" that is itself an x gate
    noisy = spec.apply_cirq(cirq.Circuit(cirq.X(Q[0])))
    assert len(list(noisy.all_operations())) == 2


# ------------------------------------------------------------------ Qiskit


def _asymmetric_2q_error():
    return amplitude_damping_error(0.4).tensor(pauli_error([("X", 0.3), ("I", 0.7)]))


def _qiskit_circuit():
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(0.7, 1)
    qc.cx(0, 2)
    qc.sx(1)
    qc.rx(1.1, 2)
    qc.cx(2, 1)
    qc.x(0)
    qc.reset(1)
    qc.ry(-0.4, 1)
    qc.cx(1, 0)
    return qc


def test_gate_noise_on_qiskit_circuit_matches_aer():
    errors = {"ry": amplitude_damping_error(0.2), "cx": _asymmetric_2q_error(), "x": depolarizing_error(0.1, 1)}
    model = NoiseModel()
    for name, error in errors.items():
        model.add_all_qubit_quantum_error(error, name)
    qc = _qiskit_circuit()
    ours = _ours_qiskit(noise.GateNoise(errors).apply_qiskit(qc))
    np.testing.assert_allclose(ours, aer_density_matrix(qc, model), atol=1e-10)


def _hand_made_aer_model():
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(0.05, 1), ["sx", "x"])
    model.add_quantum_error(amplitude_damping_error(0.3), "sx", [1])  # overrides the all-qubit error on qubit 1
    model.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), "cx")
    model.add_quantum_error(_asymmetric_2q_error(), "cx", [2, 1])
    model.add_quantum_error(thermal_relaxation_error(40, 30, 15), "reset", [1])
    model.add_all_qubit_quantum_error(pauli_error([("Z", 0.2), ("I", 0.8)]), "ry")
    model.add_all_qubit_readout_error(ReadoutError([[0.97, 0.03], [0.1, 0.9]]))
    model.add_readout_error(ReadoutError([[0.9, 0.1], [0.2, 0.8]]), [2])
    return model


def test_qiskit_noise_model_matches_aer_density_matrix():
    model = _hand_made_aer_model()
    spec = noise.resolve(model)
    assert isinstance(spec, noise.GateNoise)
    qc = _qiskit_circuit()
    np.testing.assert_allclose(_ours_qiskit(spec.apply_qiskit(qc)), aer_density_matrix(qc, model), atol=1e-10)
    np.testing.assert_allclose(spec.readout_error(3), [[0.03, 0.1], [0.03, 0.1], [0.1, 0.2]])


def test_qiskit_noise_model_on_cirq_circuit_matches_aer():
    """The converted channels keep their qubit order on Cirq circuits too."""
    model = _hand_made_aer_model()
    qc = QuantumCircuit(3)
    qc.x(0)
    qc.sx(1)
    qc.cx(2, 1)
    qc.sx(2)
    qc.cx(0, 2)
    circuit = cirq.Circuit(cirq.X(Q[0]), (cirq.X**0.5)(Q[1]), cirq.CNOT(Q[2], Q[1]), (cirq.X**0.5)(Q[2]),
                           cirq.CNOT(Q[0], Q[2]))
    noisy = noise.resolve(model).apply_cirq(circuit)
    np.testing.assert_allclose(cirq_density_matrix(noisy, Q), aer_density_matrix(qc, model), atol=1e-10)


def test_noise_model_from_generic_backend_matches_aer():
    backend = GenericBackendV2(num_qubits=3, seed=11)
    model = NoiseModel.from_backend(backend)
    spec = noise.resolve(model)
    qc = QuantumCircuit(3)  # in the backend's basis, as Aer applies the errors by instruction name
    qc.sx(0)
    qc.rz(0.4, 1)
    qc.sx(1)
    qc.cx(0, 1)
    qc.x(2)
    qc.cx(2, 0)
    qc.reset(1)
    qc.sx(1)
    qc.cx(1, 2)
    np.testing.assert_allclose(_ours_qiskit(spec.apply_qiskit(qc)), aer_density_matrix(qc, model), atol=1e-10)
    expected = [[model._local_readout_errors[(q,)].probabilities[0, 1],
                 model._local_readout_errors[(q,)].probabilities[1, 0]] for q in range(3)]
    np.testing.assert_allclose(spec.readout_error(3), expected)


def test_qiskit_errors_attach_by_label_when_a_gate_has_one():
    from qiskit.circuit import Parameter
    from qiskit.circuit.library import XGate

    model = NoiseModel()
    model.add_all_qubit_quantum_error(amplitude_damping_error(0.3), "x")
    model.add_all_qubit_quantum_error(depolarizing_error(0.2, 1), "noisy_x")
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 1)
    qc.x(0)
    qc.append(XGate(label="noisy_x"), [1])
    noisy = noise.resolve(model).apply_qiskit(qc)
    assert list(noisy.parameters) == [theta]
    bound = {theta: 0.9}
    ours = _ours_qiskit(noisy.assign_parameters(bound))
    np.testing.assert_allclose(ours, aer_density_matrix(qc.assign_parameters(bound), model), atol=1e-10)


def test_num_qubits_keeps_only_the_registers_errors():
    backend = GenericBackendV2(num_qubits=5, seed=2)
    model = NoiseModel.from_backend(backend)
    full, small = noise.resolve(model), noise.resolve(model, num_qubits=3)
    assert {r.qubits for r in small.rules} == {r.qubits for r in full.rules if max(r.qubits) < 3}
    qc = QuantumCircuit(3)
    qc.sx(0)
    qc.cx(0, 1)
    qc.x(2)
    qc.cx(2, 1)
    assert small.apply_qiskit(qc) == full.apply_qiskit(qc)
    np.testing.assert_array_equal(small.readout_error(3), full.readout_error(3))


def test_qiskit_measure_error_comes_before_the_measurement():
    model = NoiseModel()
    model.add_all_qubit_quantum_error(pauli_error([("X", 1.0)]), "measure")
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    counts = AerSimulator().run(qc, noise_model=model, shots=20, seed_simulator=1).result().get_counts()
    assert counts == {"1": 20}  # Aer flips the qubit before measuring it
    noisy = noise.resolve(model).apply_qiskit(qc)
    assert [inst.operation.name for inst in noisy.data][1:] == ["measure"]
    np.testing.assert_allclose(np.diag(_ours_qiskit(noisy)).real, [0.0, 1.0], atol=1e-12)


# ------------------------------------------------------------------ readout


@pytest.mark.parametrize(
    "readout,expected",
    [
        (0.1, [[0.1, 0.1]] * 3),
        ((0.02, 0.05), [[0.02, 0.05]] * 3),
        (ReadoutError([[0.9, 0.1], [0.3, 0.7]]), [[0.1, 0.3]] * 3),
        ([[0.1, 0.2], [0.0, 0.0], [0.3, 0.4]], [[0.1, 0.2], [0.0, 0.0], [0.3, 0.4]]),
        ({1: (0.1, 0.2)}, [[0, 0], [0.1, 0.2], [0, 0]]),
        ({Q[2]: 0.05}, [[0, 0], [0, 0], [0.05, 0.05]]),
    ],
    ids=["p", "pair", "ReadoutError", "per_qubit_list", "dict_index", "dict_cirq_qubit"],
)
def test_readout_forms(readout, expected):
    spec = noise.GateNoise(readout=readout)
    assert not spec.has_channels
    out = spec.readout_error(Q)
    assert out.dtype == np.float64 and out.shape == (3, 2)
    np.testing.assert_allclose(out, expected)
    round_trip = noise.resolve(json.loads(json.dumps(spec.get_config())))
    np.testing.assert_allclose(round_trip.readout_error(Q), expected)


def test_readout_by_index_on_qiskit_register_and_none_without():
    assert noise.GateNoise({"x": cirq.bit_flip(0.1)}).readout_error(3) is None
    np.testing.assert_allclose(noise.GateNoise(readout={2: 0.1}).readout_error(3), [[0, 0], [0, 0], [0.1, 0.1]])
    with pytest.raises(ValueError, match="cirq qubits"):
        noise.GateNoise(readout={Q[0]: 0.1}).readout_error(3)


# ------------------------------------------------------------------ configs


def _specs():
    return {
        "cirq_model": noise.CirqNoise(cirq.ConstantQubitNoiseModel(cirq.amplitude_damp(0.1)), readout=(0.01, 0.02)),
        "table": noise.GateNoise(
            {"ry": cirq.depolarize(0.01), "cx": cirq.depolarize(0.02, n_qubits=2),
             cirq.GateFamily(cirq.XPowGate): cirq.KrausChannel([np.sqrt(0.9) * np.eye(2),
                                                                np.sqrt(0.1) * np.diag([1, -1j])])},
            qubits=[0, Q[1], 2],
            readout={Q[0]: (0.1, 0.2), 2: 0.03},
        ),
        "local": noise.GateNoise({"cx": {(Q[2], Q[1]): cirq.depolarize(0.1, n_qubits=2)}, "sx": {0: pauli_error(
            [("Y", 0.2), ("I", 0.8)])}}, qubits=[Q[0], 2]),
        "aer": noise.resolve(_hand_made_aer_model()),
    }


@pytest.mark.parametrize("name", ["cirq_model", "table", "local", "aer"])
def test_config_round_trip_gives_the_same_noisy_circuits(name):
    spec = _specs()[name]
    config = json.loads(json.dumps(spec.get_config()))
    restored = noise.resolve(config)
    assert type(restored) is type(spec) and restored == spec
    assert noise.NoiseSpec.from_config(config) == spec
    circuit = _cirq_circuit()
    assert restored.apply_cirq(circuit) == spec.apply_cirq(circuit)
    np.testing.assert_array_equal(restored.readout_error(Q), spec.readout_error(Q))
    if name == "aer":
        qc = _qiskit_circuit()
        np.testing.assert_allclose(_ours_qiskit(restored.apply_qiskit(qc)), _ours_qiskit(spec.apply_qiskit(qc)),
                                   atol=1e-14)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "table,error,match",
    [
        ({"cnto": cirq.depolarize(0.1, n_qubits=2)}, ValueError, r"unknown gate name 'cnto'\. Did you mean 'cnot'"),
        ({"cx": cirq.depolarize(0.1)}, ValueError, r"acts on 1 qubit\(s\), but 'cx' gates act on 2"),
        ({"x": {(0, 1): cirq.depolarize(0.1)}}, ValueError, r"2 qubits given for a channel on 1 qubit"),
        ({"x": cirq.X.with_probability(sympy.Symbol("p"))}, ValueError, r"symbolic strengths \['p'\]"),
        ({"x": cirq.depolarize(0.1).on(Q[0])}, TypeError, "not an operation"),
        ({"x": 0.1}, TypeError, "expected a cirq channel"),
        ({"x": cirq.KrausChannel([np.eye(2), np.eye(2)], validate=False)}, ValueError, "not trace preserving"),
        ({3: cirq.depolarize(0.1)}, TypeError, "a gate kind must be"),
        ({"x": {"q0": cirq.depolarize(0.1)}}, TypeError, "a qubit must be"),
    ],
    ids=["unknown_name", "arity", "local_arity", "symbolic", "operation", "number", "not_tp", "bad_key",
         "bad_qubit"],
)
def test_table_errors(table, error, match):
    with pytest.raises(error, match=match):
        noise.resolve(table)


@pytest.mark.parametrize(
    "readout,match",
    [
        (1.5, r"must be a probability in \[0, 1\], got 1.5"),
        ((0.1, -0.2), r"P\(read 0 \| 1\) must be a probability"),
        ("high", "expected a flip probability"),
        ([[0.1, 0.2, 0.3]], r"shape \[n, 2\]"),
    ],
)
def test_readout_errors(readout, match):
    with pytest.raises(ValueError, match=match):
        noise.GateNoise(readout=readout)


def test_correlated_readout_error_is_not_converted():
    model = NoiseModel()
    model.add_readout_error(ReadoutError([[0.9, 0.1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), [0, 1])
    with pytest.raises(ValueError, match=r"readout error on qubits \(0, 1\).*correlated"):
        noise.resolve(model)


def test_three_qubit_qiskit_error_is_not_converted():
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(0.1, 3), "ccx")
    with pytest.raises(ValueError, match=r"all-qubit error on 'ccx' acts on 3 qubits"):
        noise.resolve(model)


def test_spec_errors_on_the_wrong_circuit_kind():
    qc = _qiskit_circuit()
    with pytest.raises(TypeError, match="applies to Cirq circuits only"):
        noise.resolve(cirq.ConstantQubitNoiseModel(cirq.depolarize(0.1))).apply_qiskit(qc)
    with pytest.raises(ValueError, match="matches no Qiskit instruction"):
        noise.GateNoise({cirq.XPowGate: cirq.bit_flip(0.1)}).apply_qiskit(qc)
    with pytest.raises(ValueError, match="cirq qubit"):
        noise.GateNoise({"x": {Q[0]: cirq.bit_flip(0.1)}}).apply_qiskit(qc)
    with pytest.raises(TypeError, match="noise must be None, a cirq.NoiseModel"):
        noise.resolve(42)
    with pytest.raises(ValueError, match="Not a noise config"):
        noise.resolve({"class_name": "Nope"})


def test_width_mismatch_of_a_type_key_names_the_gate():
    spec = noise.GateNoise({cirq.CXPowGate: cirq.depolarize(0.1)})
    with pytest.raises(ValueError, match=r"acts on 1 qubit\(s\), but it matched cirq.CNOT"):
        spec.apply_cirq(cirq.Circuit(cirq.CNOT(Q[0], Q[1])))


def test_unserializable_channel_fails_at_get_config_naming_it():
    class MyChannel(cirq.Gate):
        def _num_qubits_(self):
            return 1

        def _kraus_(self):
            return [np.sqrt(0.5) * np.eye(2), np.sqrt(0.5) * np.diag([1, -1])]

        def __repr__(self):
            return "MyChannel()"

    spec = noise.GateNoise({"x": MyChannel()})
    assert spec.apply_cirq(cirq.Circuit(cirq.X(Q[0])))  # usable, but not saveable
    with pytest.raises(ValueError, match=r"Channel for gate 'x' MyChannel\(\) cannot be serialized"):
        spec.get_config()


def test_docstring_examples_run():
    import doctest

    from qkeras_hybrid.noise import models

    result = doctest.testmod(models, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
