"""The hybrid MNIST demo (examples/hybrid_mnist.py), small and fast."""

import numpy as np
import pytest
import tensorflow as tf

from qkeras_hybrid.datasets import load_digits
from qkeras_hybrid.layers import ExpectationToProbabilities, QuantumLayer

from conftest import load_example


@pytest.fixture(scope="module")
def demo():
    return load_example("hybrid_mnist")


def test_demo_split_is_disjoint_balanced_and_shaped():
    (x_train, y_train), (x_test, y_test) = load_digits((0, 1), 100, 50, seed=0)
    assert x_train.shape == (200, 28, 28, 1) and x_test.shape == (100, 28, 28, 1)
    assert np.bincount(y_train).tolist() == [100, 100] and np.bincount(y_test).tolist() == [50, 50]
    assert not {x.tobytes() for x in x_train} & {x.tobytes() for x in x_test}


def test_model_is_the_textbook_network(demo):
    model = demo.build_model()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten",
        "Dense", "Dense", "QuantumLayer", "ExpectationToProbabilities",
    ]
    quantum = model.layers[-2]
    assert isinstance(quantum, QuantumLayer) and quantum.num_qubits == 1 and quantum.input_symbols == ["x"]
    assert isinstance(model.layers[-1], ExpectationToProbabilities)
    # H then Ry(x): <Z> = -sin(x), so P(0) = (1 - sin x) / 2.
    x = np.array([[0.0], [np.pi / 2], [-np.pi / 2], [0.3]], dtype=np.float32)
    np.testing.assert_allclose(quantum(x).numpy()[:, 0], -np.sin(x[:, 0]), atol=1e-6)
    probabilities = model.predict(np.zeros((3, 28, 28, 1), np.float32), verbose=0)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_short_training_classifies_held_out_digits(demo):
    # 50 training images per digit, 3 epochs: 97.5-100 % on these 200 held-out
    # digits for seeds 0-7; the full demo (100 per digit, 10 epochs) reaches
    # >= 99.6 % on 800 held-out digits for seeds 0-5.
    result = demo.train(seed=1, epochs=3, batch_size=16, train_per_class=50, test_per_class=100, verbose=0)
    assert result["test_accuracy"] >= 0.9, result["history"].history
    assert len(result["y_test"]) == 200
    losses = result["history"].history["loss"]
    assert losses[-1] < losses[0]  # the gradient flows through the circuit into the CNN


def test_main_writes_tensorboard_logs_and_a_working_saved_model(demo, tmp_path):
    log_dir, export_dir = tmp_path / "runs" / "hybrid_mnist", tmp_path / "saved_models" / "hybrid_mnist"
    accuracy = demo.main([
        "--epochs", "1", "--train-per-class", "20", "--test-per-class", "10", "--verbose", "0",
        "--log-dir", str(log_dir), "--export-dir", str(export_dir),
    ])
    assert 0.0 <= accuracy <= 1.0
    assert (log_dir / "train").is_dir() and (log_dir / "validation").is_dir()
    if demo.QuantumTensorBoard is not None:
        assert (log_dir / "quantum").is_dir()
    reloaded = tf.saved_model.load(str(export_dir))
    out = reloaded.serve(tf.zeros((2, 28, 28, 1))).numpy()
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_classical_twin_has_the_same_trunk(demo):
    hybrid, classical = demo.build_model(quantum=True), demo.build_model(quantum=False)
    assert hybrid.count_params() == classical.count_params()
    assert not any(isinstance(layer, QuantumLayer) for layer in classical.layers)
