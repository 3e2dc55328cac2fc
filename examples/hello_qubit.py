"""Hello qubit: train one qubit's U3 angles until <sigma_z> reaches a target.

The "hello qubit" of the PyTorch + Qiskit hackathon project: a single qubit,
U3(theta, phi, lambda)|0>, measured in Z on a Qiskit backend with shots; the
three angles are trainable and the loss is (<sigma_z> - target)^2. The project
compared gradients from finite differences with the analytic parameter-shift
rule at few and many shots. Here:

1. At a fixed point, the gradient of <sigma_z> = cos(theta) by both methods,
   repeated with fresh shots, against the exact value: mean and spread.
2. Training runs (SGD) with each method at 100 and 10,000 shots; the loss
   curves go to a PNG, and the exact <sigma_z> of the final angles is printed.

Two engines run the same experiment:

* `--engine qiskit` (default): `QiskitLayer` on the Qiskit circuit
  U3(theta, phi, lambda), sampled by Qiskit's sampler;
* `--engine native`: `QuantumLayer(shots=..., differentiator=...)` on the
  native simulator, with the Cirq circuit Rz(lambda), Ry(theta), Rz(phi),
  which is U3 up to a global phase (the same <sigma_z>). Its gradients are
  `differentiator="parameter_shift"` (the shift rule, estimated with the same
  shots) and `FiniteDifference(0.01)` (central differences of sampled values).

    python examples/hello_qubit.py                 # ~1 min, writes runs/hello_qubit/loss.png
    python examples/hello_qubit.py --engine native # the same table on the native engine
    python examples/hello_qubit.py --quick         # a smoke run
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit import Parameter  # noqa: E402
from qiskit.quantum_info import SparsePauliOp, Statevector  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401
from qkeras_hybrid.differentiators import FiniteDifference  # noqa: E402
from qkeras_hybrid.layers import QiskitLayer, QuantumLayer  # noqa: E402

TARGET = -0.8
START = (0.3, 0.4, -0.2)  # theta, phi, lambda
METHODS = {"finite difference (h=0.01)": ("finite_difference", 0.01), "parameter shift (pi/2)": ("parameter_shift", np.pi / 2)}


def u3_circuit():
    theta, phi, lam = Parameter("theta"), Parameter("phi"), Parameter("lambda")
    circuit = QuantumCircuit(1)
    circuit.u(theta, phi, lam, 0)
    return circuit


def exact_z(angles):
    circuit = u3_circuit()
    by_name = {p.name: p for p in circuit.parameters}
    bound = circuit.assign_parameters({by_name[n]: a for n, a in zip(("theta", "phi", "lambda"), angles)})
    return float(Statevector(bound).expectation_value(SparsePauliOp("Z")).real)


def u3_cirq():
    """U3(theta, phi, lambda) = Rz(phi) Ry(theta) Rz(lambda) up to a global phase, as a Cirq circuit."""
    import cirq
    import sympy

    theta, phi, lam = sympy.symbols("theta phi lambda")
    qubit = cirq.LineQubit(0)
    return cirq.Circuit(cirq.rz(lam)(qubit), cirq.ry(theta)(qubit), cirq.rz(phi)(qubit)), [theta, phi, lam], qubit


def qubit_layer(differentiator, shift, shots, seed, engine="qiskit"):
    if engine == "native":
        import cirq

        circuit, symbols, qubit = u3_cirq()
        native_differentiator = FiniteDifference(shift) if differentiator == "finite_difference" else differentiator
        layer = QuantumLayer(circuit, cirq.Z(qubit), weight_symbols=symbols, shots=shots, seed=seed,
                             differentiator=native_differentiator, dtype="float64")
    else:
        circuit = u3_circuit()
        layer = QiskitLayer(circuit, SparsePauliOp("Z"), weight_params=["theta", "phi", "lambda"], shots=shots,
                            differentiator=differentiator, shift=shift, seed=seed, dtype="float64")
    layer.build((1, 1))
    layer.quantum_weights.assign(START)
    return layer


def gradient_statistics(shots, repeats, seed, engine="qiskit"):
    """Mean and std of d<Z>/dtheta at START from `repeats` fresh-shot estimates, per method."""
    exact = -np.sin(START[0])
    rows = {}
    for name, (differentiator, shift) in METHODS.items():
        layer = qubit_layer(differentiator, shift, shots, seed, engine)
        estimates = []
        for _ in range(repeats):
            with tf.GradientTape() as tape:
                z = layer(tf.zeros((1, 1), tf.float64))
            estimates.append(tape.gradient(z, layer.quantum_weights).numpy()[0])
        rows[name] = (float(np.mean(estimates)), float(np.std(estimates)), exact)
    return rows


def train(differentiator, shift, shots, steps, learning_rate, seed, engine="qiskit"):
    """SGD on the sampled (<Z> - TARGET)^2; returns the exact loss after each step and the final angles."""
    layer = qubit_layer(differentiator, shift, shots, seed, engine)
    optimizer = keras.optimizers.SGD(learning_rate)
    x = tf.zeros((1, 1), tf.float64)
    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((layer(x) - TARGET) ** 2)
        optimizer.apply_gradients([(tape.gradient(loss, layer.quantum_weights), layer.quantum_weights)])
        # The exact loss (Statevector): the sampled one is noisy and often exactly 0 at few shots.
        losses.append((exact_z(layer.quantum_weights.numpy()) - TARGET) ** 2)
    return losses, layer.quantum_weights.numpy()


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, losses in curves.items():
        ax.plot(losses, label=label)
    ax.set_yscale("log")
    ax.axhline(1e-4, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("exact (<sigma_z> - target)^2")
    ax.set_title(f"Hello qubit: U3 angles trained towards <sigma_z> = {TARGET}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="SGD steps per run (default 60)")
    parser.add_argument("--learning-rate", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=50, help="gradient estimates per method and shots")
    parser.add_argument("--shots", default="100,10000", help="comma-separated shot counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("qiskit", "native"), default="qiskit",
                        help="qiskit: QiskitLayer (default); native: QuantumLayer(shots=...) on the native simulator")
    parser.add_argument("--plot", default=os.path.join("runs", "hello_qubit", "loss.png"),
                        help="where to write the loss curves")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 steps, 10 repeats")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 10
    shot_counts = [int(s) for s in args.shots.split(",")]
    start = time.perf_counter()
    print(f"One qubit, U3(theta, phi, lambda)|0>, <sigma_z> = cos(theta); start {START}, target {TARGET}")
    if args.engine == "native":
        print("engine: native (QuantumLayer with shots, Cirq circuit Rz(lambda) Ry(theta) Rz(phi))")

    print(f"\nd<sigma_z>/dtheta at theta = {START[0]}: {args.repeats} estimates with fresh shots")
    print(f"{'shots':>6} | {'method':<28} | {'mean':>8} | {'std':>8} | {'exact':>8}")
    gradients = {}
    for shots in shot_counts:
        for name, (mean, std, exact) in gradient_statistics(shots, args.repeats, args.seed, args.engine).items():
            gradients[(shots, name)] = (mean, std, exact)
            print(f"{shots:>6} | {name:<28} | {mean:>8.4f} | {std:>8.4f} | {exact:>8.4f}")

    print(f"\nSGD (learning rate {args.learning_rate}), {args.steps} steps")
    print(f"{'shots':>6} | {'method':<28} | {'final exact loss':>16} | {'exact <sigma_z> at the end':>26}")
    curves, finals = {}, {}
    for shots in shot_counts:
        for name, (differentiator, shift) in METHODS.items():
            losses, angles = train(differentiator, shift, shots, args.steps, args.learning_rate, args.seed,
                                   args.engine)
            curves[f"{name}, {shots} shots"] = losses
            finals[(shots, name)] = exact_z(angles)
            print(f"{shots:>6} | {name:<28} | {losses[-1]:>16.2e} | {finals[(shots, name)]:>26.4f}")
    plot(curves, args.plot)
    print(f"\nloss curves written to {args.plot}; total {time.perf_counter() - start:.1f} s")
    return {"gradients": gradients, "final_z": finals, "curves": curves}


if __name__ == "__main__":
    main()
