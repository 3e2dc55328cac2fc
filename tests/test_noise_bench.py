"""benchmarks/noise_bench.py --quick runs end to end in a fresh process: its
agreement checks (Cirq, shift rule, layer path, Aer, trajectory z-scores, TFQ's
gradient) pass and the JSON holds every timing and ratio. No timing is
asserted: the speed goal lives in the benchmark's output."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_noise_bench_quick_checks_pass_and_reports_every_number(tmp_path):
    out = tmp_path / "noise.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "noise_bench.py"), "--quick",
                           "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "failure" not in report
    (result,) = report["results"]
    names = {c["name"] for c in result["checks"]}
    assert {"ours traj", "TFQ traj", "Aer vs ours", "TFQ gradient unbiased"} <= names
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    deviations = {c["name"]: c.get("max_deviation") for c in result["checks"]}
    assert deviations["Aer vs ours"] <= 1e-5
    assert max(v for k, v in deviations.items() if k.startswith("ours fwd vs Cirq")) <= 1e-5
    for name in ("ours_fwd", "ours_grad", "ours_traj_fwd", "tfq_fwd", "tfq_grad", "aer_fwd"):
        timing = result["timing"][name]
        assert timing["median_ms"] > 0 and len(timing["samples_ms"]) >= 1, name
    for key in ("tfq_fwd/ours_grad", "tfq_fwd/ours_fwd", "tfq_fwd/ours_traj_fwd", "aer_fwd/ours_fwd",
                "tfq_grad/ours_grad"):
        assert result["ratios"][key] > 0, key
    assert isinstance(result["goal_met"], bool) and result["aer_choice"] in result["aer_trials"]
    assert "load average" in proc.stdout and "TFQ fwd/ours f+g" in proc.stdout
