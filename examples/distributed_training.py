"""Data-parallel training of the hybrid MNIST network on several workers with tf.distribute.

The network of examples/hybrid_mnist.py (a CNN whose last neuron drives a
one-qubit circuit) is trained with `tf.distribute.MultiWorkerMirroredStrategy`:
every worker holds a copy of the model, each global batch is split over the
workers, and the gradients are summed by the strategy's collective
all-reduce before every update, so N workers with global batch G train as
one process with batch G. Training is Keras's own `Model.fit` (progress bar,
metrics, TensorBoard on the chief), with `qkeras_hybrid.distribute` making it
work under this strategy and `qkeras_hybrid.distribute.BackupAndRestore`
letting a restarted job resume from its last completed epoch.

On one machine, the script starts N worker processes with their TF_CONFIG
and restarts them all if one dies:

    python examples/distributed_training.py --workers 2
    python examples/distributed_training.py --workers 2 --quick     # a smoke run

On several machines, run the same script once per machine, all with the same
list of workers (host:port, worker 0 first) and each with its own index:

    python examples/distributed_training.py --cluster host1:12345,host2:12345 --index 0   # on host1
    python examples/distributed_training.py --cluster host1:12345,host2:12345 --index 1   # on host2

(or set TF_CONFIG yourself and run the script without --workers/--cluster).
Worker 0 prints the test accuracy and writes the TensorBoard logs and
metrics.json under --out.
"""

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2,
                        help="number of worker processes to start on this machine (default 2)")
    parser.add_argument("--cluster", default=None,
                        help="comma-separated host:port of every worker, worker 0 first (several machines)")
    parser.add_argument("--index", type=int, default=None, help="this machine's worker index in --cluster")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="batch size per worker (default 16); the global batch is this times the workers")
    parser.add_argument("--train-per-class", type=int, default=100, help="training images per digit (default 100)")
    parser.add_argument("--test-per-class", type=int, default=50, help="test images per digit (default 50)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, the shuffling and the weights")
    parser.add_argument("--out", default=os.path.join("runs", "distributed_training"),
                        help="directory of metrics.json, the TensorBoard logs and the backups")
    parser.add_argument("--max-restarts", type=int, default=2,
                        help="with --workers: how often the job is restarted if a worker dies (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 20 + 20 images per digit")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train_per_class, args.test_per_class = 2, 20, 20
    if (args.cluster is None) != (args.index is None):
        parser.error("--cluster and --index go together")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


def launch(args, argv):
    """Starts args.workers copies of this script on localhost, each with its TF_CONFIG."""
    from qkeras_hybrid import distribute

    backup = os.path.join(args.out, "backup")
    if os.path.isdir(backup):  # left by an earlier job that failed for good: this is a new job
        shutil.rmtree(backup)
    print(f"Starting {args.workers} workers on localhost (worker 0 reports)", flush=True)
    command = [sys.executable, os.path.abspath(__file__)] + list(argv)
    start = time.perf_counter()
    restarts = distribute.launch_local(command, args.workers, max_restarts=args.max_restarts)
    print(f"All {args.workers} workers finished in {time.perf_counter() - start:.1f} s"
          + (f" after {restarts} restart(s)" if restarts else ""))


def train(args):
    """One worker: the same script runs on every worker; TF_CONFIG says which one this is."""
    import keras
    import numpy as np
    import tensorflow as tf

    from qkeras_hybrid import distribute
    from qkeras_hybrid.datasets import load_digits

    sys.path.insert(0, HERE)
    import hybrid_mnist

    # First, before any other TensorFlow call: it starts this worker's server
    # and waits for the other workers.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = distribute.worker_index(strategy)
    chief = index == 0
    workers = strategy.num_replicas_in_sync  # one CPU replica per worker
    global_batch = args.batch_size * workers

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_digits(
        hybrid_mnist.DIGITS, args.train_per_class, args.test_per_class, seed=args.seed)
    if len(x_train) < global_batch:
        raise SystemExit(f"{len(x_train)} training images make no global batch of {global_batch} "
                         f"({workers} workers x --batch-size {args.batch_size}): use more images or a smaller batch")
    # The same shuffled global batches on every worker (same seed); the
    # strategy gives each worker its share of every batch. Full batches only,
    # so every step sees the global batch.
    train_data = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                  .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
                  .batch(global_batch, drop_remainder=True))
    # The test set in one global batch, so that no worker gets an empty share
    # (a last batch smaller than the number of workers would leave some with
    # none, and Keras's Conv2D rejects an empty batch).
    test_data = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(len(x_test))

    with strategy.scope():
        model = hybrid_mnist.compile_model(hybrid_mnist.build_model(), args.learning_rate)

    callbacks = [distribute.BackupAndRestore(os.path.join(args.out, "backup"))]
    if chief:  # one writer of the logs
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(args.out, "logs")))
        print(f"{workers} workers, {args.batch_size} images per worker per step (global batch {global_batch}), "
              f"{len(x_train)} training and {len(x_test)} test images of digits {hybrid_mnist.DIGITS}", flush=True)
    start = time.perf_counter()
    history = model.fit(train_data, epochs=args.epochs, validation_data=test_data, callbacks=callbacks,
                        verbose=2 if chief else 0)
    fit_seconds = time.perf_counter() - start
    # Evaluated by all workers together, each on its share of the test set.
    test_accuracy = model.evaluate(test_data, verbose=0, return_dict=True)["accuracy"]
    if chief:
        print(f"\nTest accuracy on {len(x_test)} held-out digits, {workers} workers: {test_accuracy:.2%} "
              f"(fit {fit_seconds:.1f} s)", flush=True)
        metrics = {
            "workers": workers, "batch_size_per_worker": args.batch_size, "global_batch_size": global_batch,
            "epochs": args.epochs, "train_images": len(x_train), "test_images": len(x_test), "seed": args.seed,
            "fit_seconds": fit_seconds, "test_accuracy": float(test_accuracy),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        }
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        print(f"metrics.json and TensorBoard logs in {args.out}")
    return test_accuracy


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.cluster is not None:
        from qkeras_hybrid import distribute

        os.environ["TF_CONFIG"] = distribute.tf_config(args.cluster.split(","), args.index)
    if "TF_CONFIG" in os.environ:
        return train(args)
    launch(args, argv)


if __name__ == "__main__":
    main()
