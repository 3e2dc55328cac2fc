"""The op benchmark runs end to end on a tiny case (no timing asserted: speed
goals live in the benchmark's own output, not in tests)."""

import json

from conftest import load_example


def test_op_bench_tiny_case_agrees_with_tfq_and_reports_every_timing(tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = load_example("op_bench", folder="benchmarks").main(
        ["--cases", "3:2:16", "--reps", "2", "--block-ms", "2", "--no-layer-path", "--json", str(out)]
    )
    assert status == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["agreement_failure"] is None
    assert result["max_deviation"]["grad"] < 1e-4
    for name in ("tfq_fwd", "ours_fwd", "tfq_grad", "ours_grad"):
        assert len(result["timing"][name]["samples_ms"]) == 2
        assert result["timing"][name]["median_ms"] > 0
        assert result["calls_per_sample"][name] >= 1
    assert result["in_graph"]["ours_grad_ms"] > 0 and result["in_graph"]["tfq_grad_ms"] > 0
    assert "in one graph" in capsys.readouterr().out
