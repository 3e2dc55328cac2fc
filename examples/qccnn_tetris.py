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
    results.csv, results.md                final test accuracy and loss per network and task

and prints the table. The paper's claim to check: QCCNN reaches almost 100%
test accuracy on both tasks, with lower loss than the CNNs.

    python examples/qccnn_tetris.py                          # 3 seeds x 40 epochs, 3-6 minutes on 2 cores
    python examples/qccnn_tetris.py --seeds 10 --epochs 100  # closer to the paper
"""

import argparse
import csv
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="initialization seeds per network and task")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Tetris data set")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    parser.add_argument("--labels", default="2,5", help="comma-separated subset of 2,5")
    parser.add_argument("--out", default=os.path.join("runs", "qccnn_tetris"))
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    tasks = tuple(int(t) for t in args.labels.split(",") if t)
    if not set(models) <= set(MODELS) or not models:
        parser.error(f"--models must name some of {MODELS}, got {args.models!r}")
    if not set(tasks) <= set(TASKS) or not tasks:
        parser.error(f"--labels must be some of 2,5, got {args.labels!r}")
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be positive")
    os.makedirs(args.out, exist_ok=True)

    start = time.perf_counter()
    results = run(args.seeds, args.epochs, args.batch_size, args.learning_rate, args.data_seed, models, tasks)
    rows = summary_rows(results)
    table = write_table(rows, args.epochs, args.out)
    paths = plot(results, args.out)
    print()
    print(table)
    print()
    print(f"Wrote {', '.join(paths)} and results.csv / results.md in {args.out} "
          f"({time.perf_counter() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
