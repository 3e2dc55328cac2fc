"""QCCNN against CNN on the Tetris data set: Fig. 3 of Liu et al. (arXiv:1911.02998).

Four networks, each trained on the 2-label (S, T) and the 5-label task,
averaged over several seeds:

    QCCNN-1: QuantumConv2D(5) -> MaxPool(2)                                  -> Dense(labels, softmax)
    QCCNN-2: QuantumConv2D(2) -> MaxPool(2, stride 1, pad 1) -> QuantumConv2D(3) -> MaxPool(2) -> Dense
    CNN-1:   Conv2D(5, relu)  -> MaxPool(2)                                  -> Dense(labels, softmax)
    CNN-2:   Conv2D(2, relu)  -> MaxPool(2, stride 1, pad 1) -> Conv2D(3, relu)  -> MaxPool(2) -> Dense

Windows 2x2, stride 1, quantum circuit depth 4; Adam with learning rate 0.01;
mean-squared-error loss on one-hot labels. The 3x3 image gives 2x2 feature
maps; the padded stride-1 pooling of the two-layer nets turns them back into
3x3 maps for the second convolution (its padding is zeros; a ReLU map is >= 0,
so for the CNNs that is the same as ignoring the padded cells).

It writes, under --out (default runs/qccnn_tetris):

    fig3_2_labels.png, fig3_5_labels.png   test accuracy and loss per epoch (mean +- std over seeds)
    results.csv, results.md, metrics.json  final test accuracy and loss per network and task

and prints the table. The paper's claim to check: QCCNN reaches almost 100%
test accuracy on both tasks, with lower loss than the CNNs.

    python examples/qccnn_tetris.py                          # 3 seeds x 40 epochs, 3-6 minutes on 2 cores
    python examples/qccnn_tetris.py --seeds 10 --epochs 100  # more seeds, longer

`--protocol paper` follows the paper's Fig. 3 instead: 1000 iterations (Adam
updates) per run, curves averaged over 10 runs. The paper does not give a
batch size; an "iteration" with none given is read as one step on the whole
training set (full-batch Adam), the default here (`--batch-size N` gives
mini-batch iterations instead). Each run's training loss is recorded at
every iteration (the loss of the step, before its update) and the test loss
and accuracy every `--eval-every` iterations. The loop is Keras's train step
written out (`GradientTape`, `optimizer.apply_gradients`) inside one
`tf.function`: `fit` with full batches costs ~0.1 s of per-epoch overhead,
more than the step itself. It writes, under --out:

    paper_fig3_2_labels.png, paper_fig3_5_labels.png   training loss per iteration (mean over runs, band:
                                                        quartiles), mean test loss and accuracy
    paper_results.md, metrics_paper.json                loss at iterations 50..1000, iterations to 10% of the
                                                        initial loss and to 95% test accuracy, final accuracy

    python examples/qccnn_tetris.py --protocol paper               # 10 runs x 1000 iterations, ~20-40 min
    python examples/qccnn_tetris.py --protocol paper --quick       # 1 run x 40 iterations on 5 labels
"""

import argparse
import csv
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401  (registers the simulator op)
from qkeras_hybrid.datasets.tetris import BRICKS, TWO_LABELS, load_tetris  # noqa: E402
from qkeras_hybrid.layers import QuantumConv2D  # noqa: E402

MODELS = ("QCCNN-1", "QCCNN-2", "CNN-1", "CNN-2")
TASKS = {2: TWO_LABELS, 5: BRICKS}
DEPTH = 4


def _conv(kind, filters):
    if kind == "QCCNN":
        return QuantumConv2D(filters, kernel_size=2, strides=1, depth=DEPTH)
    return keras.layers.Conv2D(filters, kernel_size=2, strides=1, activation="relu")


def build_model(name, num_labels):
    """One of MODELS for `num_labels` classes (softmax outputs)."""
    kind, layers = name.split("-")
    stack = [keras.Input((3, 3, 1))]
    if layers == "1":
        stack += [_conv(kind, 5), keras.layers.MaxPooling2D(2)]
    else:
        stack += [
            _conv(kind, 2),
            keras.layers.ZeroPadding2D(1),
            keras.layers.MaxPooling2D(2, strides=1),
            _conv(kind, 3),
            keras.layers.MaxPooling2D(2),
        ]
    stack += [keras.layers.Flatten(), keras.layers.Dense(num_labels, activation="softmax")]
    return keras.Sequential(stack, name=name.replace("-", "_"))


def train(name, num_labels, seed, epochs, batch_size, learning_rate, data_seed):
    """Per-epoch test accuracy and loss, final train accuracy, and the parameter count."""
    (x_train, y_train), (x_test, y_test) = load_tetris(TASKS[num_labels], seed=data_seed, one_hot=True)
    keras.utils.set_random_seed(seed)
    model = build_model(name, num_labels)
    model.compile(keras.optimizers.Adam(learning_rate), "mse", metrics=["categorical_accuracy"])
    history = model.fit(
        x_train, y_train, epochs=epochs, batch_size=batch_size, validation_data=(x_test, y_test), verbose=0
    ).history
    return {
        "test_accuracy": np.array(history["val_categorical_accuracy"]),
        "test_loss": np.array(history["val_loss"]),
        "train_accuracy": history["categorical_accuracy"][-1],
        "params": model.count_params(),
    }


def run(seeds, epochs, batch_size, learning_rate, data_seed, models=MODELS, tasks=(2, 5), log=print):
    """{(labels, model): [one train() result per seed]}."""
    results = {}
    for num_labels in tasks:
        for name in models:
            start = time.perf_counter()
            runs = [train(name, num_labels, s, epochs, batch_size, learning_rate, data_seed) for s in range(seeds)]
            results[(num_labels, name)] = runs
            final = [r["test_accuracy"][-1] for r in runs]
            log(f"{num_labels} labels  {name:8s} test accuracy {np.mean(final):.3f} +- {np.std(final):.3f}  "
                f"({time.perf_counter() - start:.0f} s)")
    return results


def summary_rows(results):
    rows = []
    for (num_labels, name), runs in results.items():
        acc = [r["test_accuracy"][-1] for r in runs]
        loss = [r["test_loss"][-1] for r in runs]
        rows.append({
            "labels": num_labels,
            "model": name,
            "params": runs[0]["params"],
            "seeds": len(runs),
            "test_accuracy_mean": float(np.mean(acc)),
            "test_accuracy_std": float(np.std(acc)),
            "test_loss_mean": float(np.mean(loss)),
            "test_loss_std": float(np.std(loss)),
            "train_accuracy_mean": float(np.mean([r["train_accuracy"] for r in runs])),
        })
    return rows


def markdown_table(rows, epochs):
    lines = [
        f"Final test accuracy and loss after {epochs} epochs (mean +- std over seeds)",
        "",
        "| labels | model | params | seeds | test accuracy | test loss (MSE) | train accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['labels']} | {r['model']} | {r['params']} | {r['seeds']} | "
            f"{r['test_accuracy_mean']:.3f} +- {r['test_accuracy_std']:.3f} | "
            f"{r['test_loss_mean']:.4f} +- {r['test_loss_std']:.4f} | {r['train_accuracy_mean']:.3f} |"
        )
    return "\n".join(lines)


def plot(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for num_labels in sorted({labels for labels, _ in results}):
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
        for (labels, name), runs in results.items():
            if labels != num_labels:
                continue
            for ax, key in ((ax_acc, "test_accuracy"), (ax_loss, "test_loss")):
                curves = np.stack([r[key] for r in runs])
                epochs = np.arange(1, curves.shape[1] + 1)
                mean, std = curves.mean(axis=0), curves.std(axis=0)
                style = "-" if name.startswith("QCCNN") else "--"
                (line,) = ax.plot(epochs, mean, style, label=name)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax_acc.set(xlabel="epoch", ylabel="test accuracy", title=f"{num_labels} labels: accuracy", ylim=(0, 1.02))
        ax_loss.set(xlabel="epoch", ylabel="test loss (MSE)", title=f"{num_labels} labels: loss")
        ax_acc.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"fig3_{num_labels}_labels.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_table(rows, epochs, out_dir):
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(rows, epochs)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    return table


# ------------------------------------------------------------ the paper's protocol (Fig. 3)

CHECKPOINTS = (50, 100, 200, 500, 1000)


def train_iterations(name, num_labels, seed, iterations, batch_size, learning_rate, data_seed, eval_every):
    """One run of `iterations` Adam updates; the training loss of every step, test metrics every `eval_every`.

    `batch_size=None` makes every iteration a step on the whole training set.
    """
    (x_train, y_train), (x_test, y_test) = load_tetris(TASKS[num_labels], seed=data_seed, one_hot=True)
    keras.utils.set_random_seed(seed)
    model = build_model(name, num_labels)
    optimizer = keras.optimizers.Adam(learning_rate)
    mse = keras.losses.MeanSquaredError()
    x_test, y_test = tf.constant(x_test), tf.constant(y_test)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = mse(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def evaluate():
        predictions = model(x_test, training=False)
        correct = tf.equal(tf.argmax(predictions, -1), tf.argmax(y_test, -1))
        return mse(y_test, predictions), tf.reduce_mean(tf.cast(correct, tf.float32))

    n = len(x_train)
    batch_size = n if batch_size is None else min(batch_size, n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cursor = 0
    train_loss, eval_at, test_loss, test_accuracy = [], [], [], []
    for iteration in range(iterations):
        if batch_size == n:
            x, y = x_train, y_train
        else:  # consecutive slices of a fresh permutation per pass, every batch the same size
            if cursor + batch_size > n:
                order, cursor = rng.permutation(n), 0
            index = order[cursor:cursor + batch_size]
            cursor += batch_size
            x, y = x_train[index], y_train[index]
        train_loss.append(float(step(tf.constant(x), tf.constant(y))))
        if (iteration + 1) % eval_every == 0 or iteration + 1 == iterations:
            loss, accuracy = evaluate()
            eval_at.append(iteration + 1)
            test_loss.append(float(loss))
            test_accuracy.append(float(accuracy))
    return {
        "train_loss": np.array(train_loss),
        "eval_at": np.array(eval_at),
        "test_loss": np.array(test_loss),
        "test_accuracy": np.array(test_accuracy),
        "params": model.count_params(),
    }


def run_paper(runs, iterations, batch_size, learning_rate, data_seed, eval_every, models=MODELS, tasks=(2, 5),
              log=print):
    """{(labels, model): [one train_iterations() result per run]}."""
    results = {}
    for num_labels in tasks:
        for name in models:
            start = time.perf_counter()
            results[(num_labels, name)] = [
                train_iterations(name, num_labels, s, iterations, batch_size, learning_rate, data_seed, eval_every)
                for s in range(runs)
            ]
            curve = np.mean([r["train_loss"] for r in results[(num_labels, name)]], axis=0)
            final = [r["test_accuracy"][-1] for r in results[(num_labels, name)]]
            log(f"{num_labels} labels  {name:8s} training loss {curve[0]:.4f} -> {curve[-1]:.4f}, "
                f"test accuracy {np.mean(final):.3f} +- {np.std(final):.3f}  ({time.perf_counter() - start:.0f} s)")
    return results


def _checkpoints(iterations):
    return [c for c in CHECKPOINTS if c < iterations] + [iterations]


def _first_below(curve, threshold):
    """1-based iteration at which `curve` first reaches `threshold` (None if never)."""
    hits = np.nonzero(curve <= threshold)[0]
    return int(hits[0]) + 1 if len(hits) else None


def paper_summary(results, iterations):
    """Per (labels, model): mean training loss at checkpoints, speed of convergence, final test metrics."""
    rows = []
    for (num_labels, name), runs in results.items():
        curves = np.stack([r["train_loss"] for r in runs])
        mean = curves.mean(axis=0)
        accuracy = np.stack([r["test_accuracy"] for r in runs])
        eval_at = runs[0]["eval_at"]
        reach_accuracy = np.nonzero(accuracy.mean(axis=0) >= 0.95)[0]
        rows.append({
            "labels": num_labels,
            "model": name,
            "params": runs[0]["params"],
            "runs": len(runs),
            "loss_at": {str(c): float(mean[c - 1]) for c in _checkpoints(iterations)},
            "mean_loss_over_training": float(mean.mean()),
            # From the mean curve, and per run (median over runs).
            "iterations_to_10pct_initial_loss": _first_below(mean, 0.1 * mean[0]),
            "iterations_to_10pct_initial_loss_per_run": [_first_below(c, 0.1 * c[0]) for c in curves],
            "iterations_to_95pct_test_accuracy": int(eval_at[reach_accuracy[0]]) if len(reach_accuracy) else None,
            "final_train_loss_mean": float(mean[-1]),
            "final_train_loss_std": float(curves[:, -1].std()),
            "final_test_loss_mean": float(np.mean([r["test_loss"][-1] for r in runs])),
            "final_test_accuracy_mean": float(accuracy[:, -1].mean()),
            "final_test_accuracy_std": float(accuracy[:, -1].std()),
        })
    return rows


def paper_markdown_table(rows, iterations, batch_size):
    checkpoints = _checkpoints(iterations)
    batch = "full batch" if batch_size is None else f"batch {batch_size}"
    lines = [
        f"Paper protocol: {iterations} Adam iterations ({batch}), mean over runs; training loss (MSE) at iterations",
        "",
        "| labels | model | params | runs | " + " | ".join(f"loss @{c}" for c in checkpoints)
        + " | mean loss | iters to 10% of initial loss | iters to 95% test acc. | final test accuracy |",
        "| --- " * (4 + len(checkpoints) + 4) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['labels']} | {r['model']} | {r['params']} | {r['runs']} | "
            + " | ".join(f"{r['loss_at'][str(c)]:.4f}" for c in checkpoints)
            + f" | {r['mean_loss_over_training']:.4f} | {r['iterations_to_10pct_initial_loss'] or '-'} | "
            f"{r['iterations_to_95pct_test_accuracy'] or '-'} | "
            f"{r['final_test_accuracy_mean']:.3f} +- {r['final_test_accuracy_std']:.3f} |"
        )
    return "\n".join(lines)


def plot_paper(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for num_labels in sorted({labels for labels, _ in results}):
        fig, (ax_train, ax_test, ax_acc) = plt.subplots(1, 3, figsize=(15, 4))
        for (labels, name), runs in results.items():
            if labels != num_labels:
                continue
            style = "-" if name.startswith("QCCNN") else "--"
            curves = np.stack([r["train_loss"] for r in runs])
            steps = np.arange(1, curves.shape[1] + 1)
            (line,) = ax_train.plot(steps, curves.mean(axis=0), style, label=name)
            # Quartiles, not mean +- std: the spread of the CNNs' runs would reach below zero on the log axis.
            low, high = np.percentile(curves, [25, 75], axis=0)
            ax_train.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
            eval_at = runs[0]["eval_at"]
            for ax, key in ((ax_test, "test_loss"), (ax_acc, "test_accuracy")):
                values = np.stack([r[key] for r in runs])
                ax.plot(eval_at, values.mean(axis=0), style, color=line.get_color(), label=name)
        ax_train.set(xlabel="iteration", ylabel="training loss (MSE)", yscale="log",
                     title=f"{num_labels} labels: training loss, mean (quartiles) of {len(runs)} runs")
        ax_test.set(xlabel="iteration", ylabel="test loss (MSE)", yscale="log", title=f"{num_labels} labels: test loss")
        ax_acc.set(xlabel="iteration", ylabel="test accuracy", ylim=(0, 1.02),
                   title=f"{num_labels} labels: test accuracy")
        ax_train.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"paper_fig3_{num_labels}_labels.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_paper_outputs(results, rows, args, out_dir, seconds):
    table = paper_markdown_table(rows, args.iterations, args.batch_size)
    with open(os.path.join(out_dir, "paper_results.md"), "w") as f:
        f.write(table + "\n")
    curves = {
        f"{labels}_labels/{name}": {
            "train_loss_mean": np.mean([r["train_loss"] for r in runs], axis=0).tolist(),
            "train_loss_std": np.std([r["train_loss"] for r in runs], axis=0).tolist(),
            "eval_at": runs[0]["eval_at"].tolist(),
            "test_loss_mean": np.mean([r["test_loss"] for r in runs], axis=0).tolist(),
            "test_accuracy_mean": np.mean([r["test_accuracy"] for r in runs], axis=0).tolist(),
        }
        for (labels, name), runs in results.items()
    }
    metrics = {
        "protocol": {"iterations": args.iterations, "runs": args.seeds,
                     "batch_size": "full" if args.batch_size is None else args.batch_size,
                     "optimizer": "Adam", "learning_rate": args.learning_rate, "loss": "MSE on one-hot labels",
                     "eval_every": args.eval_every, "data_seed": args.data_seed},
        "seconds": seconds,
        "summary": rows,
        "curves": curves,
    }
    with open(os.path.join(out_dir, "metrics_paper.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("epochs", "paper"), default="epochs",
                        help="epochs: fit for --epochs (default); paper: the paper's Fig. 3, --iterations Adam steps")
    parser.add_argument("--seeds", type=int, default=None,
                        help="initialization seeds (runs) per network and task (default 3; paper protocol 10)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=1000, help="paper protocol: Adam iterations per run")
    parser.add_argument("--eval-every", type=int, default=10, help="paper protocol: test metrics every N iterations")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 32; paper protocol: the whole training set unless given")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Tetris data set")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    parser.add_argument("--labels", default="2,5", help="comma-separated subset of 2,5")
    parser.add_argument("--out", default=os.path.join("runs", "qccnn_tetris"))
    parser.add_argument("--quick", action="store_true",
                        help="paper protocol smoke run: 1 run x 40 iterations on 5 labels (unless given)")
    args = parser.parse_args(argv)
    paper = args.protocol == "paper"
    if args.quick:
        if not paper:
            parser.error("--quick is for --protocol paper (the epochs protocol takes --seeds 1 --epochs N)")
        args.iterations = 40
        args.seeds = args.seeds or 1
        if args.labels == "2,5":
            args.labels = "5"
    if args.seeds is None:
        args.seeds = 10 if paper else 3
    if args.batch_size is None and not paper:
        args.batch_size = 32
    models = tuple(m for m in args.models.split(",") if m)
    tasks = tuple(int(t) for t in args.labels.split(",") if t)
    if not set(models) <= set(MODELS) or not models:
        parser.error(f"--models must name some of {MODELS}, got {args.models!r}")
    if not set(tasks) <= set(TASKS) or not tasks:
        parser.error(f"--labels must be some of 2,5, got {args.labels!r}")
    if args.seeds < 1 or args.epochs < 1 or args.iterations < 1 or args.eval_every < 1:
        parser.error("--seeds, --epochs, --iterations and --eval-every must be positive")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be positive")
    os.makedirs(args.out, exist_ok=True)

    start = time.perf_counter()
    if paper:
        batch = "the whole training set" if args.batch_size is None else f"batches of {args.batch_size}"
        print(f"Paper protocol: {args.seeds} runs x {args.iterations} Adam iterations on {batch}, "
              f"learning rate {args.learning_rate}, MSE loss")
        results = run_paper(args.seeds, args.iterations, args.batch_size, args.learning_rate, args.data_seed,
                            args.eval_every, models, tasks)
        rows = paper_summary(results, args.iterations)
        paths = plot_paper(results, args.out)
        table = write_paper_outputs(results, rows, args, args.out, time.perf_counter() - start)
        print()
        print(table)
        print()
        print(f"Wrote {', '.join(paths)}, paper_results.md and metrics_paper.json in {args.out} "
              f"({time.perf_counter() - start:.0f} s)")
        return rows

    results = run(args.seeds, args.epochs, args.batch_size, args.learning_rate, args.data_seed, models, tasks)
    rows = summary_rows(results)
    table = write_table(rows, args.epochs, args.out)
    paths = plot(results, args.out)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"protocol": {"epochs": args.epochs, "seeds": args.seeds, "batch_size": args.batch_size,
                                "learning_rate": args.learning_rate, "data_seed": args.data_seed},
                   "summary": rows}, f, indent=1)
    print()
    print(table)
    print()
    print(f"Wrote {', '.join(paths)}, results.csv / results.md and metrics.json in {args.out} "
          f"({time.perf_counter() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
