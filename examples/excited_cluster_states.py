"""A quantum convolutional neural network (QCNN) on excited cluster states.

TensorFlow Quantum's QCNN tutorial (docs/tutorials/qcnn.ipynb), ported to
Keras 3 with `QuantumDataLayer`. The inputs are quantum data: 8-qubit cluster
states (`tfq.datasets.excited_cluster_states`' reference circuit) followed by
an Rx(theta) excitation on one random qubit, labelled +1 when
|theta| <= pi/2 and -1 otherwise. The model is the tutorial's QCNN: three
quantum convolution + pooling stages (63 trainable angles) measured by <Z> on
the last qubit, trained with Adam on the squared error, accuracy = the sign
agrees with the label.

Also reports the accuracy on TFQ's own `excited_cluster_states` dataset
(the cluster state, and the cluster state with an X on each qubit), whose
labels use the opposite convention (X = an Rx(pi) excitation is label 1
there, -1 here).

  .venv/bin/python examples/excited_cluster_states.py                  # native backend
  .venv/bin/python examples/excited_cluster_states.py --backend tfq    # TFQ's ops
  .venv/bin/python examples/excited_cluster_states.py --quick          # the smoke test's settings
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402
import tensorflow_quantum as tfq  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from qkeras_hybrid.layers import QuantumDataLayer  # noqa: E402

QUBITS = cirq.GridQubit.rect(1, 8)


# ------------------------------------------------------------------ the data


def cluster_state_circuit(qubits):
    """TFQ's dataset's unexcited circuit (its last one): H on all, CZ ring."""
    circuits, labels = tfq.datasets.excited_cluster_states(qubits)
    assert labels[-1] == -1  # the reference circuit, no excitation
    return circuits[-1]


def generate_data(qubits, rounds, seed):
    """The tutorial's data: cluster state + Rx(theta) on a random qubit; label by |theta|."""
    rng = np.random.default_rng(seed)
    cluster = cluster_state_circuit(qubits)
    circuits, labels = [], []
    for _ in range(rounds * len(qubits)):
        theta = rng.uniform(-np.pi, np.pi)
        qubit = qubits[rng.integers(len(qubits))]
        circuits.append(cluster + cirq.Circuit(cirq.rx(theta)(qubit)))
        labels.append(1.0 if -np.pi / 2 <= theta <= np.pi / 2 else -1.0)
    split = int(0.7 * len(circuits))
    labels = np.array(labels, "float32")[:, None]
    return (circuits[:split], labels[:split]), (circuits[split:], labels[split:])


# ----------------------------------------------------------------- the model


def one_qubit_unitary(bit, symbols):
    return cirq.Circuit(cirq.X(bit) ** symbols[0], cirq.Y(bit) ** symbols[1], cirq.Z(bit) ** symbols[2])


def two_qubit_unitary(bits, symbols):
    circuit = one_qubit_unitary(bits[0], symbols[0:3]) + one_qubit_unitary(bits[1], symbols[3:6])
    circuit += [cirq.ZZ(*bits) ** symbols[6], cirq.YY(*bits) ** symbols[7], cirq.XX(*bits) ** symbols[8]]
    circuit += one_qubit_unitary(bits[0], symbols[9:12]) + one_qubit_unitary(bits[1], symbols[12:])
    return circuit


def two_qubit_pool(source, sink, symbols):
    """Entangles source into sink, then only sink is used further."""
    sink_basis = one_qubit_unitary(sink, symbols[0:3])
    source_basis = one_qubit_unitary(source, symbols[3:6])
    return cirq.Circuit(sink_basis, source_basis, cirq.CNOT(source, sink), sink_basis**-1)


def quantum_conv_circuit(bits, symbols):
    circuit = cirq.Circuit()
    for first, second in zip(bits[0::2], bits[1::2]):
        circuit += two_qubit_unitary([first, second], symbols)
    for first, second in zip(bits[1::2], bits[2::2] + [bits[0]]):
        circuit += two_qubit_unitary([first, second], symbols)
    return circuit


def quantum_pool_circuit(sources, sinks, symbols):
    circuit = cirq.Circuit()
    for source, sink in zip(sources, sinks):
        circuit += two_qubit_pool(source, sink, symbols)
    return circuit


def qcnn_circuit(qubits):
    """The tutorial's QCNN on 8 qubits: 63 symbols, read out on the last qubit."""
    s = sympy.symbols("qconv0:63")
    circuit = cirq.Circuit()
    circuit += quantum_conv_circuit(qubits, s[0:15])
    circuit += quantum_pool_circuit(qubits[:4], qubits[4:], s[15:21])
    circuit += quantum_conv_circuit(qubits[4:], s[21:36])
    circuit += quantum_pool_circuit(qubits[4:6], qubits[6:], s[36:42])
    circuit += quantum_conv_circuit(qubits[6:], s[42:57])
    circuit += quantum_pool_circuit([qubits[6]], [qubits[7]], s[57:63])
    return circuit


def sign_accuracy(y_true, y_pred):
    return keras.ops.mean(keras.ops.cast(keras.ops.equal(y_true > 0, y_pred > 0), "float32"))


def build_model(backend="native", qubits=QUBITS, learning_rate=0.02):
    circuits = keras.Input((), dtype="string", name="excited_cluster_states")
    expectation = QuantumDataLayer(
        qcnn_circuit(qubits), cirq.Z(qubits[-1]), backend=backend, qubits=qubits, name="qcnn",
    )(circuits)
    model = keras.Model(circuits, expectation)
    model.compile(keras.optimizers.Adam(learning_rate), "mse", metrics=[sign_accuracy])
    return model


# ----------------------------------------------------------------------- run


def run(backend="native", epochs=25, rounds=20, batch_size=16, seed=0, verbose=1):
    keras.utils.set_random_seed(seed)
    (train_c, y_train), (test_c, y_test) = generate_data(QUBITS, rounds, seed)
    x_train, x_test = tfq.convert_to_tensor(train_c), tfq.convert_to_tensor(test_c)
    model = build_model(backend)
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose,
                        validation_data=(x_test, y_test))
    seconds = time.perf_counter() - t0
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    # TFQ's dataset: X-excited (its label 1) = a large excitation (our -1).
    tfq_circuits, tfq_labels = tfq.datasets.excited_cluster_states(QUBITS)
    tfq_pred = model.predict(tfq.convert_to_tensor(tfq_circuits), verbose=0)[:, 0]
    tfq_accuracy = float(np.mean((tfq_pred > 0) == (-np.array(tfq_labels) > 0)))
    return {
        "backend": backend,
        "train_size": len(train_c),
        "test_size": len(test_c),
        "train_accuracy": float(history.history["sign_accuracy"][-1]),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "tfq_dataset_accuracy": tfq_accuracy,
        "seconds": seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["native", "tfq"], default="native")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs (default 25, --quick 10)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="excitations per qubit (default 20: 160 circuits, 70%% for training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 epochs, 12 rounds (the smoke test)")
    args = parser.parse_args(argv)
    epochs, rounds = (10, 12) if args.quick else (args.epochs, args.rounds)
    result = run(args.backend, epochs=epochs, rounds=rounds, seed=args.seed, verbose=0 if args.quick else 2)
    print(f"QCNN on excited cluster states ({result['backend']} backend, {result['train_size']} training / "
          f"{result['test_size']} test circuits, {epochs} epochs, {result['seconds']:.1f} s)")
    print(f"train accuracy {result['train_accuracy']:.3f}, test accuracy {result['test_accuracy']:.3f}, "
          f"accuracy on tfq.datasets.excited_cluster_states {result['tfq_dataset_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main()
