"""Smoke runs (--quick) of the shots examples and of the measurement benchmark (issue 14, items 5 and 7).

No timing is asserted: the speed goals live in the benchmark's output."""

import json

import numpy as np

from conftest import load_example


def test_hello_qubit_native_engine_reproduces_the_shots_table(capsys, tmp_path):
    plot = tmp_path / "loss.png"
    result = load_example("hello_qubit").main(["--quick", "--engine", "native", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert "engine: native" in out and plot.stat().st_size > 1000
    exact = -np.sin(0.3)
    fd, ps = "finite difference (h=0.01)", "parameter shift (pi/2)"
    # The shift rule is unbiased: its mean over 10 estimates of 10,000 shots
    # (std of one ~0.007) lies within ~5 standard errors of the exact value.
    ps_mean, ps_std, _ = result["gradients"][(10000, ps)]
    assert abs(ps_mean - exact) < 0.02 and ps_std < 0.02
    # Central differences with h = 0.01 divide shot noise by 0.02: at 100
    # shots about 2 per estimate against the shift rule's ~0.07.
    assert result["gradients"][(100, fd)][1] > 5 * result["gradients"][(100, ps)][1]
    assert set(result["curves"]) == {f"{m}, {s} shots" for m in (fd, ps) for s in (100, 10000)}
    # 10 SGD steps with the shift rule at 10,000 shots move <Z> from 0.96 past 0 towards -0.8.
    assert result["final_z"][(10000, ps)] < 0.0


def test_hqcnn_probability_quick_writes_metrics_and_plot(capsys, tmp_path):
    metrics = load_example("hqcnn_probability").main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "P(|1>) from 100 shots" in out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert set(saved["test_accuracy"]) == {"training read-out (QuantumLayer, 100 shots)",
                                           "ProbabilityLayer, 100 shots", "ProbabilityLayer, exact"}
    assert all(0.0 <= a <= 1.0 for a in saved["test_accuracy"].values())
    losses = saved["history"]["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_measure_bench_quick_agrees_and_reports_ratios(tmp_path, capsys):
    out = tmp_path / "measure.json"
    status = load_example("measure_bench", folder="benchmarks").main(["--quick", "--json", str(out)])
    assert status == 0, capsys.readouterr()
    report = json.loads(out.read_text())
    assert "failure" not in report
    (sampled,) = report["sampled"]
    assert all(c["ok"] for c in sampled["checks"])
    assert sampled["fwd_ratio"] > 0 and sampled["grad_ratio"] > 0
    for name in ("tfq_fwd", "ours_fwd", "tfq_grad", "ours_grad"):
        assert len(sampled["timing"][name]["samples_ms"]) == 2
    assert report["probability"]["zi_deviation"] < 1e-4 and report["probability"]["ratio"] > 0
    assert "TFQ/ours: forward" in capsys.readouterr().out
