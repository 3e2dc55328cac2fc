"""Smoke runs of the QiskitLayer examples (shortened with --quick), checking what they print and return."""

import numpy as np

from conftest import load_example


def test_textbook_mnist_quick_learns(capsys):
    result = load_example("qiskit_textbook_mnist").main(["--quick"])
    out = capsys.readouterr().out
    assert "100 shots on AerSimulator" in out and "test accuracy:" in out
    assert f"test accuracy: {result['test_accuracy']:.4f} on 40 held-out digits" in out
    # 0 vs 1 is easy: even 2 epochs on 40 images beat chance by far.
    assert result["test_accuracy"] >= 0.8
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]


def test_hello_qubit_quick(capsys, tmp_path):
    plot = tmp_path / "loss.png"
    result = load_example("hello_qubit").main(["--quick", "--plot", str(plot), "--shots", "100,10000"])
    out = capsys.readouterr().out
    assert plot.stat().st_size > 1000 and "loss curves written" in out
    exact = -np.sin(0.3)
    ps_mean, ps_std, _ = result["gradients"][(10000, "parameter shift (pi/2)")]
    assert abs(ps_mean - exact) < 0.02 and ps_std < 0.02
    # Few shots make finite differences far noisier than the shift rule.
    assert result["gradients"][(100, "finite difference (h=0.01)")][1] > 5 * result["gradients"][(100, "parameter shift (pi/2)")][1]
    assert set(result["curves"]) == {f"{m}, {s} shots" for m in ("finite difference (h=0.01)", "parameter shift (pi/2)")
                                     for s in (100, 10000)}
    # 10 SGD steps with exact-ish gradients already move <Z> from cos(0.3) = 0.96 well towards -0.8.
    assert result["final_z"][(10000, "parameter shift (pi/2)")] < 0.0
