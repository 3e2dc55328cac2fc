"""Data-parallel training with tf.distribute (qkeras_hybrid.distribute, examples/distributed_training.py).

The multi-worker tests start real worker processes on localhost, each with its
TF_CONFIG: this file, run as a script, is the worker. They train a small
hybrid model (Dense -> 2-qubit QuantumLayer -> Dense) and compare it with
the same model trained in this process without any strategy.
"""

import doctest
import json
import os
import re
import signal
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
GLOBAL_BATCH = 8
STEPS_PER_EPOCH = 4
EPOCHS = 3
KILL_AT = (2, 1)  # (epoch, batch) after which worker 0 kills itself, once


def build_model():
    """Dense(2, tanh) -> <Z0>, <Z1> of Rx(x_i), Ry(w_i), CNOT -> Dense(1); the same weights every call."""
    qubits = cirq.LineQubit.range(2)
    xs, ws = sympy.symbols("x0 x1"), sympy.symbols("w0 w1")
    circuit = cirq.Circuit(
        [cirq.rx(x)(q) for x, q in zip(xs, qubits)],
        [cirq.ry(w)(q) for w, q in zip(ws, qubits)],
        cirq.CNOT(*qubits),
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(2, activation="tanh"),
        qkeras_hybrid.QuantumLayer(circuit, [cirq.Z(q) for q in qubits], input_symbols=list(xs)),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(0.05), "mse", metrics=["mae"])
    return model


def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS_PER_EPOCH, 4)).astype("float32")
    y = rng.normal(size=(len(x), 1)).astype("float32")
    return x, y


def dataset():
    # Global batches: the strategy splits each one over the replicas.
    return tf.data.Dataset.from_tensor_slices(data()).batch(GLOBAL_BATCH)


# ------------------------------------------------------------------ worker


class StepLog(keras.callbacks.Callback):
    """Appends "epoch batch loss" per training step to a file; optionally SIGKILLs this process once, mid-epoch."""

    def __init__(self, path, kill_marker=None):
        super().__init__()
        self.path, self.kill_marker = path, kill_marker

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        with open(self.path, "a") as f:
            f.write(f"{self.epoch} {batch} {float(logs['loss'])!r}\n")
        if self.kill_marker and (self.epoch, batch) == KILL_AT and not os.path.exists(self.kill_marker):
            open(self.kill_marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def worker_main(out, epochs, strategy_name, kill):
    if strategy_name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = distribute.worker_index(strategy)
    with strategy.scope():
        model = build_model()
    callbacks = [
        StepLog(os.path.join(out, f"steps-{index}.txt"), os.path.join(out, "killed") if kill and index == 0 else None),
        distribute.BackupAndRestore(os.path.join(out, "backup")),
    ]
    if index == 0:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "tensorboard")))
    history = model.fit(dataset(), epochs=epochs, verbose=2 if index == 0 else 0, callbacks=callbacks)
    evaluation = model.evaluate(dataset(), verbose=0, return_dict=True)
    predictions = model.predict(data()[0], verbose=0)
    np.savez(os.path.join(out, f"result-{index}.npz"), predictions=predictions,
             **{f"weight{i}": w.numpy() for i, w in enumerate(model.weights)})
    with open(os.path.join(out, f"logs-{index}.json"), "w") as f:
        json.dump({"history": history.history, "evaluate": evaluation,
                   "replicas": strategy.num_replicas_in_sync}, f)


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def reference():
    """Weights, epoch logs, evaluation and predictions of the model trained here, one device, batch GLOBAL_BATCH."""
    model = build_model()
    weights, batch_losses = {}, []

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_losses.append(float(logs["loss"]))

        def on_epoch_end(self, epoch, logs=None):
            weights[epoch + 1] = [w.numpy() for w in self.model.weights]

    history = model.fit(dataset(), epochs=EPOCHS + 1, verbose=0, callbacks=[Snapshot()])
    return {"weights": weights, "history": history.history, "batch_losses": batch_losses}


def run_workers(tmp_path, num_workers=2, epochs=EPOCHS, kill=False, max_restarts=0):
    command = [sys.executable, os.path.abspath(__file__), str(tmp_path), str(epochs), "mwms", str(int(kill))]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_dir = tmp_path / "logs"
    try:
        restarts = distribute.launch_local(command, num_workers, max_restarts=max_restarts, env=env,
                                           log_dir=str(log_dir), timeout=400)
    except (RuntimeError, TimeoutError):
        for name in sorted(os.listdir(log_dir)):
            print(name, (log_dir / name).read_text()[-3000:])
        raise
    return restarts, {i: (log_dir / f"worker-{i}.log").read_text() for i in range(num_workers)}


def load_result(tmp_path, index):
    result = np.load(tmp_path / f"result-{index}.npz")
    weights = [result[f"weight{i}"] for i in range(len(result.files) - 1)]
    logs = json.loads((tmp_path / f"logs-{index}.json").read_text())
    return weights, result["predictions"], logs


def assert_same_weights(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def logged_steps(tmp_path, index):
    """[((epoch, batch), loss)] as the worker's step log wrote them."""
    lines = (tmp_path / f"steps-{index}.txt").read_text().splitlines()
    return [((int(e), int(b)), float(loss)) for e, b, loss in map(str.split, lines)]


def steps(tmp_path, index):
    return [step for step, _ in logged_steps(tmp_path, index)]


# ------------------------------------------------------------------ tests


def test_fit_fix_is_installed_once_and_leaves_other_strategies_alone():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    assert distribute.enable_multi_worker_fit() and distribute.enable_multi_worker_fit()
    wrapped = tf_trainer.reduce_per_replica
    original = wrapped._qkeras_hybrid_original
    assert not hasattr(original, "_qkeras_hybrid_original")  # wrapped once, however often it is called
    assert not hasattr(tf_trainer.TensorFlowTrainer._maybe_symbolic_build._qkeras_hybrid_original,
                       "_qkeras_hybrid_original")
    strategy = tf.distribute.get_strategy()
    assert not distribute.is_multi_worker(strategy) and distribute.worker_index(strategy) == 0
    values = {"loss": tf.constant(1.5), "mae": tf.constant([0.5, 2.0])}
    for reduction in ("auto", "mean", "sum", "first"):
        got = wrapped(values, strategy, reduction)
        expected = original(values, strategy, reduction)
        for key in values:
            np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


def test_tf_config_and_free_ports():
    config = json.loads(distribute.tf_config(["a:1", "b:2"], 1))
    assert config == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError, match="index must be an int in \\[0, 2\\)"):
        distribute.tf_config(["a:1", "b:2"], 2)
    with pytest.raises(ValueError, match="'host:port' strings"):
        distribute.tf_config(["localhost"], 0)
    ports = distribute.free_ports(3)
    assert len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)


def test_launch_local_restarts_a_failing_job_then_reports_exit_codes(tmp_path):
    marker = tmp_path / "failed_once"
    # Each worker fails the first time only; worker 1 prints its TF_CONFIG index.
    script = (
        "import json, os, sys; index = json.loads(os.environ['TF_CONFIG'])['task']['index'];"
        f"m = {str(marker)!r} + str(index); first = not os.path.exists(m); open(m, 'w').close();"
        "print('worker', index, 'first' if first else 'again'); sys.exit(3 if first else 0)"
    )
    restarts = distribute.launch_local([sys.executable, "-c", script], 2, max_restarts=1, log_dir=str(tmp_path))
    assert restarts == 1
    assert "worker 1 first" in (tmp_path / "worker-1.log").read_text()
    assert "worker 1 again" in (tmp_path / "worker-1.log").read_text()
    with pytest.raises(RuntimeError, match=r"exit codes \[5\]\) after 0 restarts"):
        distribute.launch_local([sys.executable, "-c", "import sys; sys.exit(5)"], 1)
    with pytest.raises(ValueError, match="list of arguments"):
        distribute.launch_local("python train.py", 2)
    with pytest.raises(ValueError, match="num_workers must be a positive int"):
        distribute.launch_local([sys.executable], 0)


def test_backup_and_restore_resumes_from_the_last_epoch_in_one_process(tmp_path, reference):
    backup = tmp_path / "backup"

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    model = build_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(dataset(), epochs=EPOCHS + 1, verbose=0, callbacks=[distribute.BackupAndRestore(backup), Interrupt()])
    assert sorted(os.listdir(backup / "worker-0")) == ["epoch-1.weights.h5", "epoch-2.weights.h5"]

    model = build_model()  # a fresh process would start from these weights
    history = model.fit(dataset(), epochs=EPOCHS + 1, verbose=0, callbacks=[distribute.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == EPOCHS + 1 - 2  # epochs 3 and 4 only
    np.testing.assert_allclose(history.history["loss"], reference["history"]["loss"][2:], rtol=1e-5)
    assert_same_weights([w.numpy() for w in model.weights], reference["weights"][EPOCHS + 1])
    assert not backup.exists()  # deleted after a finished fit
    assert model._initial_epoch is None  # a later fit starts from its own initial_epoch


def test_backup_and_restore_loads_the_epoch_the_workers_agree_on(tmp_path, reference, monkeypatch):
    backup = tmp_path / "backup"
    model = build_model()
    model.fit(dataset(), epochs=3, verbose=0, callbacks=[distribute.BackupAndRestore(backup, delete_checkpoint=False)])
    assert sorted(os.listdir(backup / "worker-0")) == ["epoch-2.weights.h5", "epoch-3.weights.h5"]
    # A peer killed while saving epoch 3 has only epoch 2: everyone resumes from 2.
    monkeypatch.setattr(distribute.BackupAndRestore, "_agreed_epoch", lambda self, strategy, epoch: min(epoch, 2))
    model = build_model()
    history = model.fit(dataset(), epochs=3, verbose=0, callbacks=[distribute.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 1
    np.testing.assert_allclose(history.history["loss"], reference["history"]["loss"][2:3], rtol=1e-5)

    (backup / "worker-0").mkdir(parents=True)
    model.save_weights(backup / "worker-0" / "epoch-3.weights.h5")
    model = build_model()
    with pytest.raises(ValueError, match=r"agreed to resume from epoch 2, but .*worker-0 holds epochs \[3\]"):
        model.fit(dataset(), epochs=3, verbose=0, callbacks=[distribute.BackupAndRestore(backup)])


def test_backup_and_restore_checks_its_arguments():
    with pytest.raises(ValueError, match="needs a backup_dir"):
        distribute.BackupAndRestore("")
    with pytest.raises(ValueError, match="needs a backup_dir"):
        distribute.BackupAndRestore(None)


def test_docstring_examples_run():
    result = doctest.testmod(distribute, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_two_workers_train_like_one_worker_with_the_global_batch(tmp_path, reference):
    # Without the fix both workers fail in fit with keras-team/keras#20585's
    # "Attempt to convert a value (PerReplica:{...}) ... to a Tensor".
    restarts, logs = run_workers(tmp_path)
    assert restarts == 0
    for index in (0, 1):
        weights, predictions, worker_logs = load_result(tmp_path, index)
        assert worker_logs["replicas"] == 2
        assert_same_weights(weights, reference["weights"][EPOCHS])
        for key in ("loss", "mae"):  # the epoch logs are the global metrics
            np.testing.assert_allclose(worker_logs["history"][key], reference["history"][key][:EPOCHS], rtol=1e-5)
        assert steps(tmp_path, index) == [(e, b) for e in range(EPOCHS) for b in range(STEPS_PER_EPOCH)]
        # Each step's logs (the progress bar's running means) are the global ones.
        losses = [loss for _, loss in logged_steps(tmp_path, index)]
        np.testing.assert_allclose(losses, reference["batch_losses"][:len(losses)], rtol=1e-5)
    reference_model = build_model()
    reference_model.set_weights(reference["weights"][EPOCHS])
    np.testing.assert_allclose(predictions, reference_model.predict(data()[0], verbose=0), rtol=1e-5, atol=1e-6)
    expected = reference_model.evaluate(dataset(), verbose=0, return_dict=True)
    for index in (0, 1):
        got = load_result(tmp_path, index)[2]["evaluate"]
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-5)
    # Keras's progress output and TensorBoard run on the chief.
    assert re.search(rf"{STEPS_PER_EPOCH}/{STEPS_PER_EPOCH} - .* - loss: ", logs[0])
    assert any(name.startswith("events.out.tfevents")
               for name in os.listdir(tmp_path / "tensorboard" / "train"))
    assert not (tmp_path / "backup").exists()


def test_killed_worker_is_restarted_and_training_ends_with_the_same_steps(tmp_path, reference):
    epochs = EPOCHS + 1
    restarts, logs = run_workers(tmp_path, epochs=epochs, kill=True, max_restarts=1)
    assert restarts == 1 and (tmp_path / "killed").exists()
    # The chief (which hosts TensorFlow's coordination service) died; the
    # other worker failed at once instead of waiting forever. (Killing
    # worker 1 instead, the chief fails when its heartbeat times out, ~10 s.)
    assert "UnavailableError" in logs[1]
    killed_epoch, killed_batch = KILL_AT
    uninterrupted = [(e, b) for e in range(epochs) for b in range(STEPS_PER_EPOCH)]
    before_kill = uninterrupted[:uninterrupted.index(KILL_AT) + 1]
    resumed = [(e, b) for e in range(killed_epoch, epochs) for b in range(STEPS_PER_EPOCH)]
    assert steps(tmp_path, 0) == before_kill + resumed
    for index in (0, 1):
        # The survivor may have logged its own steps up to the kill, or one more.
        logged = steps(tmp_path, index)
        assert logged[-len(resumed):] == resumed
        weights, _, worker_logs = load_result(tmp_path, index)
        assert len(worker_logs["history"]["loss"]) == epochs - killed_epoch
        assert_same_weights(weights, reference["weights"][epochs])


def test_mirrored_strategy_on_two_logical_cpus_trains_like_one_device(tmp_path, reference):
    command = [sys.executable, os.path.abspath(__file__), str(tmp_path), str(EPOCHS), "mirrored", "0"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    weights, _, worker_logs = load_result(tmp_path, 0)
    assert worker_logs["replicas"] == 2
    assert_same_weights(weights, reference["weights"][EPOCHS])


def test_example_trains_the_hybrid_mnist_network_on_two_workers(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "examples", "distributed_training.py"), "--workers", "2", "--quick",
               "--out", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    match = re.search(r"Test accuracy on (\d+) held-out digits, 2 workers: (\d+\.\d+)%", done.stdout)
    assert match, done.stdout[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["global_batch_size"] == 2 * metrics["batch_size_per_worker"]
    assert metrics["test_accuracy"] == pytest.approx(float(match.group(2)) / 100, abs=1e-4)
    assert len(metrics["history"]["loss"]) == metrics["epochs"]


if __name__ == "__main__":
    out_dir, epochs_arg, strategy_arg, kill_arg = sys.argv[1:5]
    worker_main(out_dir, int(epochs_arg), strategy_arg, kill_arg == "1")
