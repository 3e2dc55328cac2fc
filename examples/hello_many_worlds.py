"""Hello, many worlds: a controlled PQC that steers a qubit to a state per command.

TensorFlow Quantum's "Hello, many worlds" tutorial (docs/tutorials/
hello_many_worlds.ipynb), its controlled-PQC part, ported to Keras 3 with
`QuantumDataLayer`. A qubit arrives in an unknown state (a fixed random
rotation: the "noisy preparation", the circuit input). A classical
controller (Dense 10 elu, Dense 3) turns a command into the three angles of
an Rz, Ry, Rx correction, and the layer measures <X>, <Y>, <Z>. The tutorial
has two commands (<Z> = +1 and -1); we add two more that need the other axes
(<X> = +1, <Y> = -1), so the model must learn a full rotation per command.

  .venv/bin/python examples/hello_many_worlds.py                  # native backend
  .venv/bin/python examples/hello_many_worlds.py --backend tfq    # TFQ's ops
"""

import argparse
import os
import sys

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

QUBIT = cirq.GridQubit(0, 0)
AXES = ("X", "Y", "Z")
# command -> target Bloch vector (<X>, <Y>, <Z>)
TARGETS = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [0, -1, 0]], "float32")


def noisy_preparation(seed):
    """The unknown input state: a random rotation of |0>."""
    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    return cirq.Circuit(cirq.rx(angles[0])(QUBIT), cirq.ry(angles[1])(QUBIT), cirq.rz(angles[2])(QUBIT))


def build_model(backend="native", learning_rate=0.05):
    thetas = sympy.symbols("theta_1 theta_2 theta_3")
    model_circuit = cirq.Circuit(cirq.rz(thetas[0])(QUBIT), cirq.ry(thetas[1])(QUBIT), cirq.rx(thetas[2])(QUBIT))
    circuits = keras.Input((), dtype="string", name="circuits")
    commands = keras.Input((1,), name="commands")
    controller = keras.Sequential([keras.layers.Dense(10, activation="elu"), keras.layers.Dense(3)], name="controller")
    expectations = QuantumDataLayer(
        model_circuit, [cirq.X(QUBIT), cirq.Y(QUBIT), cirq.Z(QUBIT)], input_symbols=thetas, backend=backend,
        name="controlled_pqc",
    )([circuits, controller(commands)])
    model = keras.Model([circuits, commands], expectations)
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    return model


def run(backend="native", epochs=100, seed=0, verbose=0):
    keras.utils.set_random_seed(seed)
    commands = np.arange(len(TARGETS), dtype="float32")[:, None]
    circuits = tfq.convert_to_tensor([noisy_preparation(seed)] * len(TARGETS))
    model = build_model(backend)
    history = model.fit([circuits, commands], TARGETS, epochs=epochs, verbose=verbose)
    final = model.predict([circuits, commands], verbose=0)
    return {"backend": backend, "loss": float(history.history["loss"][-1]), "bloch": final}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["native", "tfq"], default="native")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the smoke test's settings (the default ones: it is fast)")
    args = parser.parse_args(argv)
    result = run(args.backend, epochs=args.epochs, seed=args.seed)
    print(f"Hello, many worlds ({result['backend']} backend, {args.epochs} epochs, final loss {result['loss']:.2e})")
    for command, (target, bloch) in enumerate(zip(TARGETS, result["bloch"])):
        axis = int(np.argmax(np.abs(target)))
        print(f"  command {command}: target <{AXES[axis]}> = {target[axis]:+.0f}; "
              f"measured <X> = {bloch[0]:+.3f}, <Y> = {bloch[1]:+.3f}, <Z> = {bloch[2]:+.3f}")
    return result


if __name__ == "__main__":
    main()
