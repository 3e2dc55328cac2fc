"""Smoke runs (--quick, each in a fresh process) of the seed-experiment examples of issue 16, items 3-6.

Each script must write its plot and metrics, and the numbers must say the
network learned (or that the gradients behave as the shot statistics
predict). No timing is asserted: Table V's times are only checked to be
measured (positive, finite, consistent with each other).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"


def run_example(name, out, *args):
    """Runs `examples/<name>.py --quick --out <out> *args` in a new process; returns its stdout."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", f"{name}.py"), "--quick", "--out", str(out), *args],
        capture_output=True, text=True, cwd=REPO, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def read_outputs(out, plot, metrics="metrics.json"):
    with open(out / plot, "rb") as f:
        assert f.read(8) == PNG
    assert (out / plot).stat().st_size > 5000  # a drawn figure, not an empty canvas
    return json.loads((out / metrics).read_text())


def assert_unbiased(gradient):
    """The estimates' mean lies within 5 standard errors (+ float slack) of the exact derivative."""
    mean, std, exact = (np.array(gradient[k]) for k in ("mean", "std", "exact"))
    assert np.all(np.abs(mean - exact) <= 5 * std / math.sqrt(gradient["repeats"]) + 0.01), gradient


def test_deck_mnist_quick(tmp_path):
    stdout = run_example("deck_mnist", tmp_path)
    metrics = read_outputs(tmp_path, "loss.png")
    assert "Rx(a) Ry(b)" in stdout
    runs = metrics["runs"]
    assert [(r["shots"], r["differentiator"]) for r in runs.values()] == [
        (100, "parameter_shift"), (10_000, "finite_difference(0.01)")]
    for name, run in runs.items():
        history = run["history"]
        assert len(history["loss"]) == metrics["epochs"] == 2
        assert all(np.isfinite(history[k]).all() for k in ("loss", "val_loss", "mean_p_label"))
        # 0 vs 1 is easy: 2 epochs of 40 images beat chance (0.5) by far, with either gradient.
        assert history["loss"][-1] < history["loss"][0], name
        assert run["final_test_accuracy"] >= 0.8, name
        # Both estimators are unbiased (shift rule exactly, central differences up to h^2 = 1e-4).
        assert_unbiased(run["gradient"])
        assert 0.0 < history["mean_p_label"][-1] <= 1.0


def test_vqnet_table5_quick(tmp_path):
    stdout = run_example("vqnet_table5", tmp_path)
    metrics = read_outputs(tmp_path, "loss.png")
    assert "authors' machine" in stdout and "62.55" in stdout and "12.91" in stdout
    assert metrics["paper_total_training_s"] == {"PyTorch + Qiskit": 62.55, "PyTorch + QPanda": 19.75, "VQNet": 12.91}
    table = metrics["table_v"]
    for key in ("total_training_s", "fit_with_test_passes_s", "single_datum_training_ms", "quantum_forward_ms",
                "quantum_forward_backward_ms", "network_forward_ms", "single_datum_test_ms", "test_set_s",
                "test_set_one_batch_s"):
        assert math.isfinite(table[key]) and table[key] > 0, key
    # The training time is the part of fit's time before each epoch's test pass.
    assert table["total_training_s"] < table["fit_with_test_passes_s"]
    steps = metrics["epochs"] * metrics["train_images"]
    assert table["single_datum_training_ms"] == pytest.approx(1e3 * table["total_training_s"] / steps)
    assert table["quantum_backward_ms"] >= 0.0
    table_iv, history = metrics["table_iv"], metrics["history"]
    assert len(history["loss"]) == 2 and np.isfinite(history["val_loss"]).all()
    # Two epochs of 100 images: the 100-shot HQCNN is already well above chance (0.5).
    assert table_iv["train_loss_final_pass"] < history["loss"][0]
    assert table_iv["train_accuracy_final_pass"] >= 0.75
    assert table_iv["test_accuracy"] >= 0.7


def test_vqnet_fig4_quick(tmp_path):
    stdout = run_example("vqnet_fig4", tmp_path)
    metrics = read_outputs(tmp_path, "loss.png")
    assert "Qiskit black box" in stdout
    history = metrics["history"]
    assert len(history["loss"]) == len(history["val_loss"]) == 2
    assert history["loss"][1] < history["loss"][0]
    assert history["val_loss"][1] < history["val_loss"][0]
    assert metrics["final_test_accuracy"] >= 0.7


def test_qccnn_paper_protocol_quick(tmp_path):
    stdout = run_example("qccnn_tetris", tmp_path, "--protocol", "paper")
    metrics = read_outputs(tmp_path, "paper_fig3_5_labels.png", "metrics_paper.json")
    assert "40 Adam iterations" in stdout and "| 5 | QCCNN-2 |" in (tmp_path / "paper_results.md").read_text()
    assert metrics["protocol"]["batch_size"] == "full" and metrics["protocol"]["iterations"] == 40
    rows = {r["model"]: r for r in metrics["summary"]}
    assert set(rows) == {"QCCNN-1", "QCCNN-2", "CNN-1", "CNN-2"} and all(r["labels"] == 5 for r in rows.values())
    for name, curve in metrics["curves"].items():
        losses = curve["train_loss_mean"]
        assert len(losses) == 40 and np.isfinite(losses).all(), name
        # Full-batch Adam at learning rate 0.01: 40 steps lower the training loss of every network.
        assert losses[-1] < losses[0], name
        assert curve["eval_at"] == [10, 20, 30, 40]
    # Chance is 0.2 on 5 labels; the one-layer QCCNN is past it after 40 steps (0.57 at seed 0).
    assert rows["QCCNN-1"]["final_test_accuracy_mean"] > 0.3
    curve = metrics["curves"]["5_labels/QCCNN-1"]["train_loss_mean"]
    assert rows["QCCNN-1"]["loss_at"]["40"] == pytest.approx(curve[-1])


def test_qiskit_textbook_convergence_plot_quick(tmp_path):
    stdout = run_example("qiskit_textbook_mnist", tmp_path)
    metrics = read_outputs(tmp_path, "convergence.png")
    assert "convergence plot and metrics written" in stdout
    nll, loss = metrics["history"]["textbook_nll"], metrics["history"]["loss"]
    assert len(nll) == len(loss) == metrics["epochs"] == 3
    # The textbook's loss is -P(label): in [-1, 0], falling as the network learns (-0.5 is chance).
    assert all(-1.0 <= v <= 0.0 for v in nll)
    assert nll[-1] < nll[0] and nll[-1] < -0.6
    assert metrics["test_accuracy"] >= 0.8
