"""QAOA for MaxCut: p = 1-3 layers, trained with Keras optimizers on exact and on sampled expectations.

The quantum approximate optimization algorithm (Farhi, Goldstone, Gutmann,
arXiv:1411.4028), as in the slide deck's QAOA example and VQNet 1.0's QAOA:
for a graph G = (V, E) the cut of a bitstring z is C(z) = sum over edges
(i, j) of (1 - z_i z_j) / 2 (z = +-1), and the depth-p ansatz

    |gamma, beta> = prod_{l=1..p} exp(-i beta_l B) exp(-i gamma_l C) |+>^n,    B = sum_i X_i,

is trained to maximize <C>. Here `exp(-i gamma C)` is one
`cirq.ZZPowGate(exponent=-gamma/pi, global_shift=-0.5)` per edge (which is
exp(i gamma Z_i Z_j / 2), that is exp(-i gamma (1 - Z_i Z_j) / 2) up to a
global phase) and `exp(-i beta B)` is `cirq.rx(2 beta)` on every qubit. The
2p angles are the weights of one `QuantumLayer` without inputs whose
observable is sum over edges of Z_i Z_j / 2, so <C> = |E| / 2 - output; the
loss is the output itself, minimized by `fit` with `keras.optimizers.Adam`:

* exact: `QuantumLayer(...)`, analytic expectations, adjoint gradients;
* shots: `QuantumLayer(..., shots=1000, seed=...)`: each step measures the
  circuit 1000 times (all terms commute, so one measurement setting), and
  the gradient is the parameter-shift rule estimated with 1000 shots per
  shifted circuit, as hardware would.

After training, the exact <C> of the trained angles gives the expectation
approximation ratio <C> / C_max against the brute-force maximum cut (all 2^n
bitstrings); `ProbabilityLayer` gives the probability of measuring an optimal
cut, and `SampleLayer` (1000 shots) the best and the mean cut of the sampled
bitstrings. The p = 1 cost landscape is evaluated on a (gamma, beta) grid,
all grid points as one batch of a `QuantumLayer` whose inputs are gamma and
beta, and plotted with the trained points.

Choices where the seeds give too little:

* Graphs: the deck's 2-qubit case is one edge (C_max = 1, which p = 1 reaches
  exactly at gamma = pi/2, beta = pi/8); the others are random 3-regular
  graphs of 8, 10 and 12 nodes (`networkx.random_regular_graph(3, n,
  seed)`), unweighted.
* Initialization: the linear ramp of Trotterized annealing, gamma_l = 0.75
  (l - 1/2) / p, beta_l = 0.75 (1 - (l - 1/2) / p), the same for every graph
  and p (no random restarts).
* Optimizer: Adam, learning rate 0.05; 200 steps (exact) and 200 steps
  (shots) per run; one step per batch of one row (the layer has no inputs).
* References, not the seeds' numbers (they give none): for 3-regular graphs
  p = 1 guarantees <C> / C_max >= 0.6924 (Farhi et al.), and for graphs
  without short cycles p = 2 and p = 3 give >= 0.7559 and >= 0.7924 (Wurtz and
  Love, arXiv:2010.11209).

Symmetries used to fold trained points into the plotted window: <C> is
periodic in gamma with period 2 pi (C is integer), in beta with period pi/2
(exp(-i pi/2 B) is X^n up to a phase, which commutes with C and fixes |+>^n),
and unchanged by (gamma, beta) -> (-gamma, -beta) (everything is real).

Writes runs/qaoa_maxcut/metrics.json, landscape.png and training.png.

    python examples/qaoa_maxcut.py            # 2, 8, 10, 12 nodes, p = 1-3, exact and 1000 shots
    python examples/qaoa_maxcut.py --quick    # 2 and 8 nodes, p = 1 (and p = 2 exact), fewer steps
"""

import argparse
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401
from qkeras_hybrid.layers import ProbabilityLayer, QuantumLayer, SampleLayer  # noqa: E402

RAMP = 0.75  # total "annealing time" of the initial linear ramp
FARHI_P1_BOUND = 0.6924
LOWER_BOUNDS = {1: FARHI_P1_BOUND, 2: 0.7559, 3: 0.7924}  # 3-regular graphs (p >= 2: large girth)


def maxcut_graphs(sizes, seed=0):
    """{name: (num_nodes, edges)}: one edge (the deck's 2-qubit case) and random 3-regular graphs."""
    graphs = {}
    for n in sizes:
        if n == 2:
            graphs["2 nodes (deck)"] = (2, [(0, 1)])
            continue
        import networkx as nx

        graph = nx.random_regular_graph(3, n, seed=seed)
        graphs[f"3-regular, {n} nodes"] = (n, sorted(tuple(sorted(e)) for e in graph.edges()))
    return graphs


def bitstrings(n):
    """All 2^n bitstrings [2^n, n]; bit j is qubit j, qubit 0 the most significant (Cirq's order)."""
    return (np.arange(2**n)[:, None] >> (n - 1 - np.arange(n))) & 1


def cut_values(bits, edges):
    """Cut of each bitstring: bits [..., n] -> [...]."""
    bits = np.asarray(bits)
    return sum((bits[..., i] != bits[..., j]).astype(np.int64) for i, j in edges)


def qaoa_circuit(n, edges, p):
    """(circuit, qubits, gammas, betas) of the depth-p QAOA ansatz for MaxCut."""
    qubits = cirq.LineQubit.range(n)
    gammas = list(sympy.symbols(f"gamma0:{p}"))
    betas = list(sympy.symbols(f"beta0:{p}"))
    ops = [cirq.H.on_each(*qubits)]
    for gamma, beta in zip(gammas, betas):
        # exp(-i gamma (1 - Z_i Z_j) / 2) = exp(i gamma Z_i Z_j / 2) up to a global phase.
        ops += [cirq.ZZPowGate(exponent=-gamma / sympy.pi, global_shift=-0.5)(qubits[i], qubits[j])
                for i, j in edges]
        ops += [cirq.rx(2 * beta)(q) for q in qubits]
    return cirq.Circuit(ops), qubits, gammas, betas


def zz_observable(qubits, edges):
    """sum over edges of Z_i Z_j / 2, so that <C> = |E| / 2 - <this>."""
    return cirq.PauliSum.from_pauli_strings([0.5 * cirq.Z(qubits[i]) * cirq.Z(qubits[j]) for i, j in edges])


def ramp_angles(p, ramp=RAMP):
    """Linear-ramp initial angles [gamma_1..gamma_p, beta_1..beta_p]."""
    t = (np.arange(p) + 0.5) / p
    return np.concatenate([ramp * t, ramp * (1.0 - t)])


def energy(y_true, y_pred):
    """The loss: the layer's output, sum of Z_i Z_j / 2 (= |E| / 2 - <C>)."""
    del y_true
    return y_pred[:, 0]


class ExactRatio(keras.callbacks.Callback):
    """Records the exact <C> / C_max of the training layer's angles after every epoch."""

    def __init__(self, training_layer, exact_layer, num_edges, max_cut):
        super().__init__()
        self.training_layer, self.exact_layer = training_layer, exact_layer
        self.num_edges, self.max_cut = num_edges, max_cut
        self.ratios = []

    def ratio(self):
        self.exact_layer.quantum_weights.assign(self.training_layer.quantum_weights)
        zz = float(self.exact_layer(np.zeros((1, 1), np.float32))[0, 0])
        return (self.num_edges / 2 - zz) / self.max_cut

    def on_train_begin(self, logs=None):
        self.ratios = [self.ratio()]

    def on_epoch_end(self, epoch, logs=None):
        self.ratios.append(self.ratio())


def train_qaoa(n, edges, p, max_cut, steps, learning_rate, shots=None, seed=0, steps_per_epoch=10):
    """Trains one QAOA ansatz with `fit`; returns (angles [2p], exact ratio after each epoch, seconds)."""
    circuit, qubits, gammas, betas = qaoa_circuit(n, edges, p)
    observable = zz_observable(qubits, edges)
    initial = keras.initializers.Constant(ramp_angles(p))
    layer = QuantumLayer(circuit, observable, weight_symbols=gammas + betas, shots=shots,
                         seed=None if shots is None else seed,
                         initializer=initial, name="qaoa")
    model = keras.Sequential([keras.Input((1,)), layer])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=energy)
    exact = QuantumLayer(circuit, observable, weight_symbols=gammas + betas, initializer=initial)
    exact(np.zeros((1, 1), np.float32))  # builds its weights, which the tracker overwrites
    tracker = ExactRatio(layer, exact, len(edges), max_cut)
    epochs = max(1, steps // steps_per_epoch)
    rows = np.zeros((steps_per_epoch, 1), np.float32)
    start = time.perf_counter()
    model.fit(rows, rows, batch_size=1, epochs=epochs, verbose=0, callbacks=[tracker])
    seconds = time.perf_counter() - start
    return layer.quantum_weights.numpy().astype(float), tracker.ratios, seconds


def evaluate(n, edges, p, angles, cuts, shots=1000, seed=0):
    """Exact <C>, P(optimal cut) and the cuts of `shots` sampled bitstrings at the given angles."""
    circuit, qubits, gammas, betas = qaoa_circuit(n, edges, p)
    weights = dict(weight_symbols=gammas + betas, initializer=keras.initializers.Constant(angles))
    row = np.zeros((1, 1), np.float32)
    zz = float(QuantumLayer(circuit, zz_observable(qubits, edges), **weights)(row)[0, 0])
    probabilities = ProbabilityLayer(circuit, qubits=qubits, **weights)(row).numpy()[0]
    samples = SampleLayer(circuit, shots, qubits=qubits, seed=seed, **weights)(row).numpy()[0]
    sampled_cuts = cut_values(samples, edges)
    max_cut = int(cuts.max())
    expectation = len(edges) / 2 - zz
    return {
        "expectation_cut": expectation,
        "expectation_ratio": expectation / max_cut,
        "p_optimal": float(probabilities[cuts == max_cut].sum()),
        "best_sampled_cut": int(sampled_cuts.max()),
        "best_sampled_ratio": float(sampled_cuts.max() / max_cut),
        "mean_sampled_ratio": float(sampled_cuts.mean() / max_cut),
        "sample_shots": shots,
    }


def landscape(n, edges, max_cut, num_gamma, num_beta):
    """The p = 1 ratio <C> / C_max on a grid over gamma in [0, pi], beta in [0, pi/2]; one batch."""
    circuit, qubits, gammas, betas = qaoa_circuit(n, edges, 1)
    layer = QuantumLayer(circuit, zz_observable(qubits, edges), input_symbols=gammas + betas)
    gamma = np.linspace(0.0, math.pi, num_gamma)
    beta = np.linspace(0.0, math.pi / 2, num_beta)
    grid = np.stack(np.meshgrid(gamma, beta, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)
    zz = layer(grid).numpy()[:, 0].reshape(num_gamma, num_beta)
    return gamma, beta, (len(edges) / 2 - zz) / max_cut


def fold_p1(gamma, beta):
    """A p = 1 point mapped into gamma in [0, pi], beta in [0, pi/2) by the symmetries of <C>."""
    gamma = gamma % (2 * math.pi)
    beta = beta % (math.pi / 2)
    if gamma > math.pi:
        gamma, beta = 2 * math.pi - gamma, (-beta) % (math.pi / 2)
    return gamma, beta


def plot_landscapes(landscapes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(landscapes), 2)
    rows = math.ceil(len(landscapes) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.6 * columns, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(landscapes):]:
        ax.set_visible(False)
    for ax, (name, entry) in zip(axes.flat, landscapes.items()):
        image = ax.contourf(entry["gamma"], entry["beta"], np.asarray(entry["ratio"]).T, levels=30, cmap="viridis")
        fig.colorbar(image, ax=ax, label="<C> / C_max")
        for label, (g, b), marker, color, size in (
            ("start (ramp)", entry["start"], "o", "orange", 11),
            (f"trained, {entry['shots']} shots", entry["trained_shots"], "X", "white", 15),
            ("trained, exact", entry["trained_exact"], "*", "red", 11),
        ):
            if g is not None:
                ax.plot(g, b, marker, color=color, markersize=size, markeredgecolor="black", label=label)
        ax.set_xlabel("gamma")
        ax.set_ylabel("beta")
        ax.set_title(f"p = 1 landscape, {name}")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["graph"] for r in runs}, key=lambda g: [r["graph"] for r in runs].index(g))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for run in (r for r in runs if r["graph"] == name):
            steps = np.arange(len(run["ratio_per_epoch"])) * run["steps_per_epoch"]
            style = "-" if run["mode"] == "exact" else "--"
            ax.plot(steps, run["ratio_per_epoch"], style, label=f"p={run['p']}, {run['mode']}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("exact <C> / C_max")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8, 10, 12], help="graph sizes (2 = one edge)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3], help="QAOA depths p")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--shots", type=int, default=1000, help="shots per expectation in the sampled runs")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--grid", type=int, default=61, help="landscape grid points per axis")
    parser.add_argument("--seed", type=int, default=0, help="graph and shot seed")
    parser.add_argument("--out", default=os.path.join("runs", "qaoa_maxcut"),
                        help="directory of metrics.json, landscape.png and training.png")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 and 8 nodes, p = 1 (exact and shots) and p = 2 (exact), 60 steps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quick_plan = None
    if args.quick:
        args.sizes, args.depths, args.steps, args.grid = [2, 8], [1, 2], 60, 25
        quick_plan = {(1, "exact"), (1, "shots"), (2, "exact")}
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    runs, landscapes = [], {}
    print(f"QAOA MaxCut: Adam({args.learning_rate}), {args.steps} steps per run, shots runs with {args.shots} "
          "shots (parameter-shift gradients)")
    print(f"{'graph':<22} {'p':>2} {'mode':>6} {'C_max':>5} {'<C>':>7} {'<C>/C_max':>9} {'P(opt)':>7} "
          f"{'best sampled':>12} {'fit s':>6}")
    for name, (n, edges) in maxcut_graphs(args.sizes, args.seed).items():
        cuts = cut_values(bitstrings(n), edges)
        max_cut = int(cuts.max())
        depths = [1] if n == 2 else args.depths  # one edge: p = 1 is already exact
        trained_p1 = {}
        for p in depths:
            for mode, shots in (("exact", None), ("shots", args.shots)):
                if quick_plan is not None and (p, mode) not in quick_plan:
                    continue
                angles, ratios, seconds = train_qaoa(n, edges, p, max_cut, args.steps, args.learning_rate,
                                                     shots=shots, seed=args.seed)
                result = evaluate(n, edges, p, angles, cuts, seed=args.seed + 1)
                run = {"graph": name, "nodes": n, "edges": [list(e) for e in edges], "p": p, "mode": mode,
                       "shots": shots, "max_cut": max_cut, "angles": angles.tolist(),
                       "initial_ratio": ratios[0], "ratio_per_epoch": ratios, "steps": args.steps,
                       "steps_per_epoch": 10, "fit_seconds": seconds, **result}
                if n > 2:
                    run["lower_bound_3_regular"] = LOWER_BOUNDS.get(p)
                runs.append(run)
                if p == 1:
                    trained_p1[mode] = fold_p1(*angles)
                print(f"{name:<22} {p:>2} {mode:>6} {max_cut:>5} {result['expectation_cut']:>7.3f} "
                      f"{result['expectation_ratio']:>9.4f} {result['p_optimal']:>7.4f} "
                      f"{result['best_sampled_cut']:>12d} {seconds:>6.1f}", flush=True)
        gamma, beta, grid = landscape(n, edges, max_cut, args.grid, args.grid)
        landscapes[name] = {"gamma": gamma.tolist(), "beta": beta.tolist(), "ratio": grid.tolist(),
                            "grid_max_ratio": float(grid.max()),
                            "grid_argmax": [float(gamma[np.argmax(grid) // len(beta)]),
                                            float(beta[np.argmax(grid) % len(beta)])],
                            "trained_exact": trained_p1.get("exact", (None, None)),
                            "trained_shots": trained_p1.get("shots", (None, None)),
                            "start": tuple(ramp_angles(1)), "shots": args.shots}
        print(f"{name}: p = 1 landscape max on the {args.grid}x{args.grid} grid: "
              f"{landscapes[name]['grid_max_ratio']:.4f} at (gamma, beta) = "
              f"({landscapes[name]['grid_argmax'][0]:.3f}, {landscapes[name]['grid_argmax'][1]:.3f})")
    total = time.perf_counter() - start
    metrics = {"learning_rate": args.learning_rate, "steps": args.steps, "shots": args.shots, "seed": args.seed,
               "quick": args.quick, "initialization": f"linear ramp, total time {RAMP}",
               "runs": runs, "landscapes": landscapes, "seconds": total}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    plot_landscapes(landscapes, os.path.join(args.out, "landscape.png"))
    plot_training(runs, os.path.join(args.out, "training.png"))
    print(f"{total:.1f} s; metrics.json, landscape.png and training.png written to {args.out}")
    return metrics


if __name__ == "__main__":
    main()
