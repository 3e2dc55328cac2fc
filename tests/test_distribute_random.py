"""Each replica of a tf.distribute strategy draws its own random numbers (distribute.enable_per_replica_seeds).

Every replica gets the same inputs, and the random draws of one step are
compared between replicas: Dropout masks, sampled expectations
(`QuantumLayer(shots=)`) and their parameter-shift gradients, `SampleLayer`
samples, and noisy trajectories (`simulation="trajectories"`) and their
gradients, both in a `strategy.run` step and inside `Model.fit`. They must
differ between replicas (their noise is uncorrelated) and be reproducible
for fixed seeds (two processes draw the same). With Keras's own
`SeedGenerator.next` (the fix turned off) the replicas draw identical
numbers, which these tests also check, so they fail without the fix.

The strategies run in subprocesses (this file, run as a script, is the
worker), started together once per module: MirroredStrategy on 2 logical
CPUs, and MultiWorkerMirroredStrategy with 2 workers on localhost.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sympy  # noqa: E402
import tensorflow as tf  # noqa: E402

import qkeras_hybrid  # noqa: E402
from qkeras_hybrid import distribute  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 64  # rows per replica, all the same
STEPS = 2
RANDOM = ("dropout", "shots", "shots_gradient", "samples", "trajectories", "trajectories_gradient")


def random_layers():
    """name -> layer, each drawing random numbers from its own fixed seed."""
    qubits = cirq.LineQubit.range(2)
    xs, ws = sympy.symbols("x0 x1"), sympy.symbols("w0 w1")
    circuit = cirq.Circuit(
        [cirq.rx(x)(q) for x, q in zip(xs, qubits)],
        [cirq.ry(w)(q) for w, q in zip(ws, qubits)],
        cirq.CNOT(*qubits),
    )
    z = [cirq.Z(q) for q in qubits]
    weights = keras.initializers.Constant([0.3, 1.1])
    return {
        "dropout": keras.layers.Dropout(0.5, seed=1),
        "shots": qkeras_hybrid.QuantumLayer(circuit, z, input_symbols=list(xs), shots=16, seed=2,
                                            initializer=weights),
        "samples": qkeras_hybrid.SampleLayer(circuit, shots=8, input_symbols=list(xs), seed=3,
                                             initializer=weights),
        "trajectories": qkeras_hybrid.QuantumLayer(circuit, z, input_symbols=list(xs), noise=cirq.depolarize(0.1),
                                                   simulation="trajectories", trajectories=8, seed=4,
                                                   initializer=weights),
    }


def inputs():
    return tf.fill([BATCH, 2], 1.0)


def draw(layers, x):
    """One step's random draws of every layer on inputs `x` (name -> tensor)."""
    out = {"dropout": layers["dropout"](tf.ones([BATCH, 16]), training=True), "samples": layers["samples"](x)}
    for name in ("shots", "trajectories"):
        with tf.GradientTape() as tape:
            tape.watch(x)
            values = layers[name](x)
        out[name] = values
        out[f"{name}_gradient"] = tape.gradient(values, x)  # per row: shot / trajectory noise of the gradient
    return out


def replica_draws(strategy):
    """{name: [local replicas, STEPS, ...]}: what each replica of this process drew, same inputs everywhere."""
    with strategy.scope():
        layers = random_layers()
    step = tf.function(lambda x: draw(layers, x))
    steps = []
    for _ in range(STEPS):
        per_replica = strategy.run(step, args=(inputs(),))
        steps.append({name: np.stack([v.numpy() for v in strategy.experimental_local_results(value)])
                      for name, value in per_replica.items()})
    return {name: np.stack([s[name] for s in steps], axis=1).astype(np.float64) for name in RANDOM}


class Record(keras.layers.Layer):
    """The identity, which keeps the last batch each replica saw: a sync-on-read variable has one copy per replica."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        # In a list: Keras need not track it, it is not part of the model.
        self._seen = [tf.Variable(tf.zeros(shape), trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                                  aggregation=tf.VariableAggregation.SUM)]

    def call(self, x):
        if not isinstance(x, keras.KerasTensor):  # not while Keras traces the model's structure
            self._seen[0].assign(tf.cast(x, tf.float32))
        return x

    def seen(self, strategy):
        return np.stack([v.numpy() for v in strategy.experimental_local_results(self._seen[0])])


def fit_draws(strategy):
    """{name: [local replicas, ...]}: the random draws each replica made in the last step of `Model.fit`."""
    rows = BATCH * strategy.num_replicas_in_sync
    with strategy.scope():
        layers = random_layers()
        layers["samples"].trainable = False  # samples have no gradient
        x = keras.Input((2,))
        records = {name: Record((BATCH,) + shape) for name, shape in
                   (("dropout", (16,)), ("shots", (2,)), ("samples", (8, 2)), ("trajectories", (2,)))}
        hidden = keras.layers.Dense(16, kernel_initializer="ones", use_bias=False)(x)
        branches = [records["dropout"](layers["dropout"](hidden)), records["shots"](layers["shots"](x)),
                    keras.layers.Flatten()(records["samples"](layers["samples"](x))),
                    records["trajectories"](layers["trajectories"](x))]
        outputs = keras.layers.Dense(1)(keras.layers.Concatenate()(
            [keras.ops.cast(branch, "float32") for branch in branches]))
        model = keras.Model(x, outputs)
        model.compile("sgd", "mse")
    data = tf.data.Dataset.from_tensors((tf.ones([2]), tf.zeros([1]))).repeat(rows * STEPS).batch(rows)
    model.fit(data, epochs=1, verbose=0)
    return {name: record.seen(strategy) for name, record in records.items()}


def worker_main(out, strategy_name):
    if strategy_name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    results = {}
    for name, array in replica_draws(strategy).items():
        results[f"run/{name}"] = array
    for name, array in fit_draws(strategy).items():
        results[f"fit/{name}"] = array
    distribute.enable_per_replica_seeds(False)  # Keras's own seeds: the bug
    for name, array in replica_draws(strategy).items():
        results[f"keras/{name}"] = array
    for name, array in fit_draws(strategy).items():
        results[f"keras_fit/{name}"] = array
    np.savez(os.path.join(out, f"draws-{distribute.worker_index(strategy)}.npz"), **results)


# ------------------------------------------------------------------ fixtures


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    return env


def _load(paths):
    """{key: array} with the replicas of all workers along axis 0."""
    files = [np.load(path) for path in paths]
    return {key: np.concatenate([f[key] for f in files]) for key in files[0].files}


@pytest.fixture(scope="module")
def draws(tmp_path_factory):
    """{"mirrored": ..., "multi_worker": ...}: what the replicas drew, both runs at once (they mostly wait)."""
    mirrored_out, multi_worker_out = tmp_path_factory.mktemp("mirrored"), tmp_path_factory.mktemp("multi_worker")
    script = os.path.abspath(__file__)
    with open(mirrored_out / "log.txt", "w") as log:
        mirrored = subprocess.Popen([sys.executable, script, str(mirrored_out), "mirrored"], env=_env(),
                                    stdout=log, stderr=subprocess.STDOUT)
        log_dir = multi_worker_out / "logs"
        try:
            distribute.launch_local([sys.executable, script, str(multi_worker_out), "mwms"], 2, env=_env(),
                                    log_dir=str(log_dir), timeout=300)
        except (RuntimeError, TimeoutError):
            for name in sorted(os.listdir(log_dir)):
                print(name, (log_dir / name).read_text()[-3000:])
            raise
        finally:
            try:
                mirrored.wait(timeout=300)
            finally:
                if mirrored.poll() is None:
                    mirrored.kill()
    assert mirrored.returncode == 0, (mirrored_out / "log.txt").read_text()[-3000:]
    return {"mirrored": _load([mirrored_out / "draws-0.npz"]),
            "multi_worker": _load([multi_worker_out / "draws-0.npz", multi_worker_out / "draws-1.npz"])}


@pytest.fixture(scope="module")
def mirrored(draws):
    return draws["mirrored"]


@pytest.fixture(scope="module")
def multi_worker(draws):
    return draws["multi_worker"]


def noise_correlation(values):
    """Correlation of two replicas' noise: `values` [2 replicas, (steps,) rows, *outputs] of identical inputs.

    Every row of an output has the same distribution, so the noise is the
    value minus that output's mean over replicas, steps and rows.
    """
    rows = values.reshape(2, -1, *values.shape[-1:])
    noise = rows - rows.mean(axis=(0, 1), keepdims=True)
    return np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]


def assert_independent_replicas(draws, prefix, names):
    for name in names:
        values = draws[f"{prefix}/{name}"]
        assert values.shape[0] == 2, name
        assert values[0].std() > 0 and values[1].std() > 0, name  # something random was drawn
        assert not np.array_equal(values[0], values[1]), f"{name}: both replicas drew the same numbers"
        # Same inputs, independent noise: uncorrelated (+-0.06 at these sizes; 1 for a shared stream).
        assert abs(noise_correlation(values)) < 0.3, f"{name}: noise correlation {noise_correlation(values):.2f}"


def assert_shared_stream(draws, prefix, names):
    for name in names:
        values = draws[f"{prefix}/{name}"]
        np.testing.assert_array_equal(values[0], values[1], err_msg=name)


# ------------------------------------------------------------------ tests


def test_seeds_are_unchanged_without_several_replicas():
    # Single-device runs draw exactly what Keras's SeedGenerator gives.
    assert distribute.enable_per_replica_seeds()
    generator = keras.random.SeedGenerator(7)
    np.testing.assert_array_equal([generator.next().numpy() for _ in range(2)], [[7, 0], [7, 1]])
    x = inputs()
    fixed = {name: value.numpy() for name, value in draw(random_layers(), x).items()}
    one_replica = tf.distribute.MirroredStrategy(["/cpu:0"])
    with one_replica.scope():
        layers = random_layers()
    in_replica = one_replica.run(tf.function(lambda x: draw(layers, x)), args=(x,))
    try:
        distribute.enable_per_replica_seeds(False)
        keras_seeds = {name: value.numpy() for name, value in draw(random_layers(), x).items()}
    finally:
        distribute.enable_per_replica_seeds()
    for name in RANDOM:
        assert keras_seeds[name].std() > 0, name
        np.testing.assert_array_equal(fixed[name], keras_seeds[name], err_msg=name)
        np.testing.assert_array_equal(in_replica[name].numpy(), keras_seeds[name], err_msg=name)


def test_enable_per_replica_seeds_wraps_once_and_restores_keras():
    wrapped = keras.random.SeedGenerator.next
    original = wrapped._qkeras_hybrid_original
    assert distribute.enable_per_replica_seeds() and keras.random.SeedGenerator.next is wrapped
    try:
        assert not distribute.enable_per_replica_seeds(False)
        assert keras.random.SeedGenerator.next is original
        assert not distribute.enable_per_replica_seeds(False)
        assert keras.random.SeedGenerator.next is original
    finally:
        assert distribute.enable_per_replica_seeds()
    assert keras.random.SeedGenerator.next._qkeras_hybrid_original is original


def test_mirrored_replicas_draw_different_streams(mirrored):
    assert_independent_replicas(mirrored, "run", RANDOM)
    for name in RANDOM:
        assert not np.array_equal(mirrored[f"run/{name}"][:, 0], mirrored[f"run/{name}"][:, 1])  # steps differ
    # What Keras does by itself: every replica draws the same numbers.
    assert_shared_stream(mirrored, "keras", RANDOM)


def test_mirrored_replicas_draw_different_streams_in_fit(mirrored):
    names = ("dropout", "shots", "samples", "trajectories")
    assert_independent_replicas(mirrored, "fit", names)
    assert_shared_stream(mirrored, "keras_fit", names)


def test_workers_draw_different_reproducible_streams(multi_worker, mirrored):
    assert_independent_replicas(multi_worker, "run", RANDOM)
    assert_shared_stream(multi_worker, "keras", RANDOM)
    for name in RANDOM:
        # Reproducible: another process, another strategy, the same seeds, the same draws. (Replica ids count
        # across workers: worker i draws what replica i of one process with two devices draws.)
        np.testing.assert_array_equal(multi_worker[f"run/{name}"], mirrored[f"run/{name}"], err_msg=name)


def test_workers_draw_different_streams_in_fit(multi_worker):
    names = ("dropout", "shots", "samples", "trajectories")
    assert_independent_replicas(multi_worker, "fit", names)
    assert_shared_stream(multi_worker, "keras_fit", names)


if __name__ == "__main__":
    worker_main(sys.argv[1], sys.argv[2])
